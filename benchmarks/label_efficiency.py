"""Label efficiency (issue #4): k-shot GAN heads against supervised UNets trained on N exact masks.

    python3 benchmarks/label_efficiency.py [--quick]

Test set: rendered faces with exact masks (seeds 9,000,000+, never trained on). Few-shot: k generated samples
of `builtin:faces64` labelled by the label oracle (standing in for a person), a CNN or MLP head trained on
their features; test images are segmented through GAN inversion (inverted once, cached, shared by every head).
Supervised: a UNet trained on N rendered images with exact masks (flip/scale/rotate augmentation), same test
set. Several seeds each; mean and spread. Every finished entry is cached in runs/label_efficiency/results.json,
so an interrupted run resumes where it stopped. Writes the `label_efficiency` section of BENCHMARKS.md and the
plot docs/label_efficiency.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import machine, utc_now, write_section  # noqa: E402

from partseg.atomic import atomic_write_text  # noqa: E402
from partseg.augment import AugmentConfig, augment_pair  # noqa: E402
from partseg.faces import render_face  # noqa: E402
from partseg.fewshot import FewShotConfig, Shots, train_head  # noqa: E402
from partseg.gan import load_generator  # noqa: E402
from partseg.gan.sampling import sample  # noqa: E402
from partseg.invert import InversionConfig, invert  # noqa: E402
from partseg.labels import FACES  # noqa: E402
from partseg.metrics import ScoreAccumulator  # noqa: E402
from partseg.oracle import ORACLE_EVAL_SEED0, load_oracle, predict_labels, to_input  # noqa: E402
from partseg.seg_train import SegTrainConfig, fit_segmenter  # noqa: E402
from partseg.unet import UNet, UNetConfig  # noqa: E402

WORK = ROOT / "runs" / "label_efficiency"
SUPERVISED_SEED0 = 3_000_000  # supervised training faces (disjoint from the oracle's and the GAN's)
SHOT_SEED0 = 500_000  # generated samples used as shots: seed SHOT_SEED0 + 1000 * run + i


def test_set(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    imgs, masks = zip(*(render_face(s) for s in range(ORACLE_EVAL_SEED0, ORACLE_EVAL_SEED0 + n)), strict=True)
    return to_input(np.stack(imgs)), torch.from_numpy(np.stack(masks)).long()


def cached_inversions(G, images: torch.Tensor, steps: int, batch: int = 25) -> dict:
    """Invert the test images once; batches are cached on disk so an interrupted run resumes."""
    out = {"ws": [], "noise": []}
    for i in range(0, len(images), batch):
        path = WORK / f"inversion_{steps}_{i:05d}.pt"
        if not path.exists():
            t = time.time()
            inv = invert(G, images[i:i + batch], InversionConfig(steps=steps))
            torch.save({"ws": inv.ws, "noise": inv.noise, "psnr": inv.psnr, "seconds": time.time() - t}, path)
            print(f"  inverted test images {i}..{i + len(inv.ws) - 1}: PSNR {inv.psnr.mean():.1f} dB, "
                  f"{time.time() - t:.0f} s")
        rec = torch.load(path, weights_only=True)
        out["ws"].append(rec["ws"])
        out["noise"].append(rec["noise"])
    return out


def score_head(G, head, inv: dict, masks: torch.Tensor) -> float:
    acc = ScoreAccumulator(len(FACES))
    j = 0
    for ws, noise in zip(inv["ws"], inv["noise"], strict=True):
        _, logp = head.predict_ws(G, ws, noise=noise)
        acc.add(logp.argmax(1), masks[j:j + len(ws)])
        j += len(ws)
    return acc.scores().miou


def supervised_batches(n: int, batch: int, seed: int):
    """N fixed rendered faces, augmented as in the paper (flip, scale 0.5-2, rotation, translation, colour)."""
    imgs, masks = zip(*(render_face(s) for s in range(SUPERVISED_SEED0 + 10_000 * seed,
                                                      SUPERVISED_SEED0 + 10_000 * seed + n)), strict=True)
    x_all, y_all = to_input(np.stack(imgs)), torch.from_numpy(np.stack(masks)).long()

    def make(start: int):
        step = start
        while True:
            g = torch.Generator().manual_seed(seed * 7919 + step)
            idx = torch.randint(n, (batch,), generator=g)
            x, y = x_all[idx], y_all[idx]
            yield augment_pair(x, y, AugmentConfig(), g)
            step += 1

    return make


def run_supervised(n: int, seed: int, steps: int, test: tuple) -> float:
    torch.manual_seed(seed)
    model = UNet(UNetConfig(num_classes=len(FACES), channels=[16, 32, 64, 128]))
    cfg = SegTrainConfig(steps=steps, lr=2e-3, warmup=50, ckpt_every=steps, log_every=100, seed=seed)
    fit_segmenter(model, supervised_batches(n, 16, seed), cfg, WORK / f"sup_{n}_{seed}", progress=False)
    acc = ScoreAccumulator(len(FACES))
    pred, _ = predict_labels(model, test[0])
    acc.add(pred, test[1])
    return acc.scores().miou


def oracle_shots(G, oracle, k: int, run: int) -> Shots:
    s = sample(G, k, seed=SHOT_SEED0 + 1000 * run)
    labels, _ = predict_labels(oracle, s.images)
    return Shots([f"seed{x}" for x in s.seeds], s.ws, s.seeds, s.noise_mode, labels, FACES)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small smoke run (no BENCHMARKS.md update)")
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--inversion-steps", type=int, default=200)
    ap.add_argument("--sup-steps", type=int, default=1500)
    args = ap.parse_args()
    shots_k, sup_n = [1, 5, 10], [1, 5, 10, 50, 100, 500, 2000]
    if args.quick:
        args.n_test, args.seeds, args.inversion_steps, args.sup_steps = 25, 1, 20, 30
        shots_k, sup_n = [1], [1, 5]
    WORK.mkdir(parents=True, exist_ok=True)
    cache_path = WORK / ("results_quick.json" if args.quick else "results.json")
    results = json.loads(cache_path.read_text()) if cache_path.exists() else {}

    def record(key: str, fn) -> float:
        if key not in results:
            t = time.time()
            results[key] = {"miou": fn(), "seconds": round(time.time() - t, 1)}
            atomic_write_text(json.dumps(results, indent=1), cache_path)
            print(f"{key}: mIoU {results[key]['miou']:.4f} ({results[key]['seconds']} s)")
        return results[key]["miou"]

    test = test_set(args.n_test)
    G = load_generator("builtin:faces64")
    oracle = load_oracle()
    inv = cached_inversions(G, test[0], args.inversion_steps)
    for k in shots_k:
        for seed in range(args.seeds):
            shots = oracle_shots(G, oracle, k, seed)
            for kind in ("cnn", "mlp"):
                record(f"fewshot/{kind}/{k}/{seed}", lambda kind=kind, shots=shots, seed=seed: score_head(
                    G, train_head(G, shots, FewShotConfig(head=kind, seed=seed), progress=False), inv, test[1]))
    for n in sup_n:
        for seed in range(args.seeds):
            record(f"supervised/{n}/{seed}", lambda n=n, seed=seed: run_supervised(n, seed, args.sup_steps, test))
    if args.quick:
        return
    write_report(results, shots_k, sup_n, args)


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def write_report(results: dict, shots_k: list[int], sup_n: list[int], args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(prefix: str, xs: list[int]) -> list[tuple[int, float, float]]:
        return [(x, *_stats([v["miou"] for k, v in results.items() if k.startswith(f"{prefix}/{x}/")])) for x in xs]

    sup = series("supervised", sup_n)
    cnn, mlp = series("fewshot/cnn", shots_k), series("fewshot/mlp", shots_k)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for data, label, style in ((sup, "supervised UNet (exact masks)", "o-"), (cnn, "few-shot CNN head", "s-"),
                               (mlp, "few-shot MLP head", "^-")):
        xs, m, sd = zip(*data, strict=True)
        ax.errorbar(xs, m, yerr=sd, fmt=style, capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("number of labelled images")
    ax.set_ylabel(f"mIoU on {args.n_test} rendered test faces")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "label_efficiency.png", dpi=110)
    rows = [f"| supervised UNet | {n} | {m:.3f} ± {s:.3f} |" for n, m, s in sup]
    rows += [f"| few-shot {kind} head (inversion, {args.inversion_steps} steps) | {k} | {m:.3f} ± {s:.3f} |"
             for kind, data in (("CNN", cnn), ("MLP", mlp)) for k, m, s in data]
    text = "\n".join([
        "## Label efficiency (issue #4)",
        "",
        f"mIoU on {args.n_test} rendered test faces with exact masks; mean ± standard deviation over {args.seeds} "
        f"seeds (different shots / training images and initialisations). Few-shot shots are generated samples of "
        f"`builtin:faces64` labelled by the label oracle; the supervised UNet (channels [16, 32, 64, 128]) trains "
        f"{args.sup_steps} steps of 16 augmented crops on N rendered faces with exact masks.",
        "",
        f"- Machine: {machine()}",
        "- Command: `python3 benchmarks/label_efficiency.py`",
        f"- Date (UTC): {utc_now()}",
        "",
        "| method | labelled images | mIoU |",
        "| --- | ---: | ---: |",
        *rows,
        "",
        "![label efficiency](docs/label_efficiency.png)",
    ])
    write_section("label_efficiency", text)
    print(text)


if __name__ == "__main__":
    main()
