"""Ship a built-in generator (`builtin:NAME`) from its training run and measure it (issues #3, #14).

    python3 benchmarks/builtin_generator.py --name faces128 --run runs/faces128 --mode aligned
    python3 benchmarks/builtin_generator.py --name faces64 --run runs/faces64 --mode wild     # the first edition

1. Takes the EMA generator of the training run, stores it as float16 safetensors in partseg/weights/NAME.safetensors.
2. Reloads the shipped file, samples the default annotation set (10 samples, exact latents), labels it with the
   label oracle of the mode and writes it in the data-set layout to partseg/weights/NAME_annotations/, with an
   overlay picture docs/NAME_annotations.png; a sample grid goes to docs/NAME_samples.png.
3. Measures how confident the oracle is on generated samples (mean max-softmax, share of pixels above 0.9),
   next to the same figures on held-out renders of the same mode, plus each class's pixel share in both. Writes
   the `builtin_NAME` section of BENCHMARKS.md. (The quality gates of issue #14 are benchmarks/generator_gates.py.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import machine, utc_now, write_section  # noqa: E402

from partseg.data.dataset import write_sample_set  # noqa: E402
from partseg.data.faces import render_face  # noqa: E402
from partseg.eval.oracle import ORACLE_EVAL_SEED0, ORACLES, load_oracle, predict_labels, to_input  # noqa: E402
from partseg.gan import load_generator, save_generator  # noqa: E402
from partseg.gan.checkpoints import BUILTIN_ANNOTATIONS, builtin_path  # noqa: E402
from partseg.gan.sampling import sample  # noqa: E402
from partseg.images import image_grid, save_png, to_uint8  # noqa: E402
from partseg.labels import FACES  # noqa: E402

WEIGHTS = ROOT / "partseg" / "weights"
DOCS = ROOT / "docs"


def confidence_stats(oracle, images: torch.Tensor) -> dict:
    labels, conf = predict_labels(oracle, images)
    share = torch.bincount(labels.flatten(), minlength=len(FACES)).double()
    return {"mean_max_softmax": float(conf.mean()), "share_above_0.9": float((conf > 0.9).double().mean()),
            "class_share": (share / share.sum()).tolist()}


def overlay_sheet(images: np.ndarray, masks: np.ndarray, path: Path, zoom: int = 3) -> None:
    from PIL import Image

    top = np.concatenate(list(images), 1)
    bottom = np.concatenate([(0.4 * im + 0.6 * FACES.colorize(m)).astype(np.uint8)
                             for im, m in zip(images, masks, strict=True)], 1)
    sheet = Image.fromarray(np.concatenate([top, bottom], 0))
    sheet.resize((sheet.width * zoom, sheet.height * zoom), Image.NEAREST).save(path)


def training_summary(run: Path, name: str) -> dict:
    """kimg, wall-clock hours (from the logged sec/kimg) and a loss-curve plot of the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines() if '"loss_G"' in ln]
    seconds, prev = 0.0, 0.0
    for r in recs:
        seconds += r["sec_per_kimg"] * (r["kimg"] - prev)
        prev = r["kimg"]
    kimg = [r["kimg"] for r in recs]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(kimg, [r["loss_G"] for r in recs], label="G loss")
    a.plot(kimg, [r["loss_D"] for r in recs], label="D loss")
    a.set_xlabel("kimg")
    a.legend()
    a.grid(alpha=0.3)
    b.plot(kimg, [r["D_real"] for r in recs], label="D(real)")
    b.plot(kimg, [r["D_fake"] for r in recs], label="D(fake)")
    b.set_xlabel("kimg")
    b.legend()
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(DOCS / f"{name}_training.png", dpi=100)
    plt.close(fig)
    return {"kimg": prev, "hours": seconds / 3600}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="faces128", help="built-in name: partseg/weights/NAME.safetensors")
    ap.add_argument("--run", type=Path, default=None, help="training run folder (default: runs/NAME)")
    ap.add_argument("--mode", choices=("wild", "aligned"), default="aligned", help="what the generator was trained on")
    ap.add_argument("--n-quality", type=int, default=1000)
    ap.add_argument("--oracle", type=Path, default=None, help="oracle weights (default: the shipped ones)")
    ap.add_argument("--truncation", type=float, default=1.0, help="truncation of the default annotation set")
    args = ap.parse_args()
    name, run = args.name, args.run or ROOT / "runs" / args.name

    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    tcfg, step = ckpt["train_config"], int(ckpt["step"])
    kimg = step * tcfg["batch"] / 1000
    del ckpt
    G = load_generator(run)
    size = G.resolution
    shipped = WEIGHTS / f"{name}.safetensors"
    synth = f"partseg data synth --n 20000 --size {size} --seed 0"
    synth += " --mode aligned" if args.mode == "aligned" else ""
    save_generator(G, shipped, dtype=torch.float16,
                   extra={"kimg": f"{kimg:.1f}", "train_config": json.dumps(tcfg), "data": f"{synth} (images only)"})
    G = load_generator(f"builtin:{name}")  # everything below uses exactly what ships
    assert builtin_path(name) == shipped, f"add {name!r} to BUILTINS in partseg/gan/checkpoints.py"
    oracle = load_oracle(args.oracle or ORACLES[args.mode])

    # the default annotation set
    ann = sample(G, 10, seed=0, truncation=args.truncation)
    labels, conf = predict_labels(oracle, ann.images)
    out = WEIGHTS / BUILTIN_ANNOTATIONS[name]
    write_sample_set(out, ann, FACES, masks=labels.byte().numpy(), generator=f"builtin:{name}")
    DOCS.mkdir(exist_ok=True)
    train_sum = training_summary(run, name)
    overlay_sheet(to_uint8(ann.images), labels.numpy(), DOCS / f"{name}_annotations.png", zoom=3 if size <= 64 else 2)
    grid = sample(G, 64, seed=1000)
    save_png(image_grid(grid.images, cols=16), DOCS / f"{name}_samples.png")

    # oracle confidence: generated samples vs held-out renders
    gen = sample(G, args.n_quality, seed=100_000, batch=100)
    g = confidence_stats(oracle, gen.images)
    renders = np.stack([render_face(s, size, mode=args.mode)[0]
                        for s in range(ORACLE_EVAL_SEED0, ORACLE_EVAL_SEED0 + args.n_quality)])
    r = confidence_stats(oracle, to_input(renders))
    rows = [f"| {n} | {gs:.2%} | {rs:.2%} |" for n, gs, rs in zip(FACES.names, g["class_share"], r["class_share"],
                                                                   strict=True)]
    size_mb = shipped.stat().st_size / 2**20
    small_ids = [FACES.names.index(n) for n in ("eye", "eyebrow", "mouth")]

    def small(stats: dict) -> float:
        return sum(stats["class_share"][i] for i in small_ids)

    text = "\n".join([
        f"## Built-in generator {name} ({'issue #14' if args.mode == 'aligned' else 'issue #3'})",
        "",
        f"Our StyleGAN2 trained with `partseg gan train` on 20,000 rendered {args.mode} {size} px faces (images "
        f"only), {kimg:.0f} kimg (step {step}, {train_sum['hours']:.1f} h of CPU training by the logged speed; loss "
        f"curves `docs/{name}_training.png`); shipped as float16 safetensors ({size_mb:.1f} MB). The label oracle "
        f"labels {args.n_quality} generated samples (seeds 100000+, no truncation, const noise) and {args.n_quality} "
        f"held-out renders; its confidence says whether generated parts are recognisable. The default annotation "
        f"set is samples 0-9 at truncation {args.truncation}.",
        "",
        f"- Machine: {machine()}",
        f"- Command: `python3 benchmarks/builtin_generator.py --name {name} --mode {args.mode}"
        + (f" --truncation {args.truncation}" if args.truncation != 1.0 else "") + "`",
        f"- Date (UTC): {utc_now()}",
        "",
        "| | generated samples | held-out renders |",
        "| --- | ---: | ---: |",
        f"| oracle mean max-softmax | {g['mean_max_softmax']:.3f} | {r['mean_max_softmax']:.3f} |",
        f"| share of pixels with max-softmax > 0.9 | {g['share_above_0.9']:.1%} | {r['share_above_0.9']:.1%} |",
        f"| default annotation set (10 samples): mean max-softmax | {float(conf.mean()):.3f} | |",
        "",
        "Pixel share of each class as the oracle labels them:",
        "",
        "| class | generated | renders |",
        "| --- | ---: | ---: |",
        *rows,
        "",
        f"Small parts (eye, eyebrow, mouth) cover {small(g):.2%} of the generated pixels against {small(r):.2%} of "
        f"the renders' pixels ({small(g) / max(small(r), 1e-9):.0%} of it): confidence alone can look good while "
        f"the generator leaves small parts out, so read both.",
        "",
        f"Samples: `docs/{name}_samples.png`; the default annotation set: `docs/{name}_annotations.png`.",
    ])
    write_section(f"builtin_{name}", text)
    print(text)


if __name__ == "__main__":
    main()
