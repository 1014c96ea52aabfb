"""Quality gates of a built-in generator against its rendered world (issue #14), scored by the label oracle.

    python3 benchmarks/generator_gates.py --gan runs/faces128 [--mode aligned --oracle W --n 1000]
                                          [--compare builtin:faces64] [--no-write]

On n generated samples (seeds 100000+, no truncation, const noise) and n held-out renders (seeds 9,000,000+) of
the generator's resolution, the oracle gives:
- each class's pixel share on samples and renders; gate: every class >= 85 % of its share on renders;
- its mean max-softmax on both; gate: samples within 0.02 of renders;
- a Fréchet distance between its bottleneck features of samples and of renders, next to the same distance
  between two disjoint sets of n renders (the noise floor) and, with --compare, for another generator in its
  own world (builtin:faces64: wild 64 px renders, the 64 px oracle).
Writes the section "gates-NAME" of BENCHMARKS.md and a sample grid docs/NAME_gates_grid.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from report import machine, utc_now, write_section  # noqa: E402

from partseg.data.faces import render_batch  # noqa: E402
from partseg.eval.metrics import frechet_distance  # noqa: E402
from partseg.eval.oracle import (  # noqa: E402
    ORACLE_EVAL_SEED0,
    ORACLES,
    bottleneck_features,
    load_oracle,
    predict_labels,
    to_input,
)
from partseg.gan import load_generator  # noqa: E402
from partseg.gan.sampling import sample  # noqa: E402
from partseg.images import image_grid, save_png  # noqa: E402
from partseg.labels import FACES  # noqa: E402

SHARE_GATE, CONFIDENCE_GATE = 0.85, 0.02


def oracle_view(oracle: torch.nn.Module, images: torch.Tensor) -> dict:
    """Class pixel shares, mean max-softmax and bottleneck features of images [N, 3, H, W] in [-1, 1]."""
    labels, conf = predict_labels(oracle, images)
    share = torch.bincount(labels.flatten(), minlength=len(FACES)).double()
    return {"share": (share / share.sum()).tolist(), "confidence": float(conf.double().mean()),
            "features": bottleneck_features(oracle, images)}


def renders(n: int, size: int, mode: str, seed0: int) -> torch.Tensor:
    return torch.cat([to_input(render_batch(range(s, min(s + 100, seed0 + n)), size, mode)[0])
                      for s in range(seed0, seed0 + n, 100)])


def world(gan: str, oracle_path: Path, mode: str, n: int) -> dict:
    """Samples vs renders of one generator in its world, plus the renders-vs-renders noise floor."""
    G = load_generator(gan)
    oracle = load_oracle(oracle_path)
    gen = oracle_view(oracle, sample(G, n, seed=100_000, batch=50).images)
    ren = oracle_view(oracle, renders(n, G.resolution, mode, ORACLE_EVAL_SEED0))
    ren2 = oracle_view(oracle, renders(n, G.resolution, mode, ORACLE_EVAL_SEED0 + 100_000))
    return {"G": G, "gen": gen, "ren": ren, "fd": frechet_distance(gen["features"], ren["features"]),
            "fd_floor": frechet_distance(ren2["features"], ren["features"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gan", required=True, help="generator: run folder, .safetensors or builtin:NAME")
    ap.add_argument("--name", default=None, help="name in the report (default: from --gan)")
    ap.add_argument("--mode", default="aligned", choices=["wild", "aligned"])
    ap.add_argument("--oracle", type=Path, default=None, help="default: the oracle of --mode's world")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--compare", default=None, help="another generator, scored in its own (wild 64 px) world")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    name = args.name or Path(args.gan.removeprefix("builtin:")).name
    oracle = args.oracle or ORACLES[args.mode]
    w = world(args.gan, oracle, args.mode, args.n)
    grid = ROOT / "docs" / f"{name}_gates_grid.png"
    if not args.no_write:
        save_png(image_grid(sample(w["G"], 64, seed=1000).images, cols=16), grid)
    ratios = [g / r if r > 0 else float("nan") for g, r in zip(w["gen"]["share"], w["ren"]["share"], strict=True)]
    share_ok = all(x >= SHARE_GATE for x in ratios)
    conf_gap = w["ren"]["confidence"] - w["gen"]["confidence"]
    rows = [f"| {c} | {g:.2%} | {r:.2%} | {x:.0%}{'' if x >= SHARE_GATE else ' (below)'} |"
            for c, g, r, x in zip(FACES.names, w["gen"]["share"], w["ren"]["share"], ratios, strict=True)]
    lines = [
        f"## Quality gates: {name} (issue #14)",
        "",
        f"{args.n} generated samples (seeds 100000+, no truncation) against {args.n} held-out {args.mode} renders at "
        f"{w['G'].resolution} px, labelled by the oracle `{Path(oracle).name}`. Grid: `docs/{grid.name}`.",
        "",
        f"- Machine: {machine()}",
        f"- Command: `python3 benchmarks/generator_gates.py --gan {args.gan} --mode {args.mode}"
        + (f" --compare {args.compare}" if args.compare else "") + "`",
        f"- Date (UTC): {utc_now()}",
        "",
        "| class | pixel share, samples | renders | samples / renders |",
        "| --- | ---: | ---: | ---: |",
        *rows,
        "",
        f"- Every class >= {SHARE_GATE:.0%} of its share on renders: **{'met' if share_ok else 'not met'}**.",
        f"- Oracle mean max-softmax: samples {w['gen']['confidence']:.3f}, renders {w['ren']['confidence']:.3f} "
        f"(gap {conf_gap:+.3f}; gate within {CONFIDENCE_GATE}: "
        f"**{'met' if abs(conf_gap) <= CONFIDENCE_GATE else 'not met'}**).",
        f"- Fréchet distance of oracle bottleneck features: samples vs renders **{w['fd']:.2f}**; two disjoint "
        f"sets of renders (noise floor) {w['fd_floor']:.2f}.",
    ]
    if args.compare:
        c = world(args.compare, ORACLES["wild"], "wild", args.n)
        lines.append(f"- For comparison, {args.compare} in its own world (wild {c['G'].resolution} px renders, "
                     f"the {c['G'].resolution} px oracle): Fréchet distance {c['fd']:.2f} (noise floor "
                     f"{c['fd_floor']:.2f}), mean max-softmax {c['gen']['confidence']:.3f} vs "
                     f"{c['ren']['confidence']:.3f}. Different oracles: compare each distance with its own floor.")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(f"gates-{name}", text)


if __name__ == "__main__":
    main()
