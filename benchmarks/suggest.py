"""What the labeller's "suggest" button saves (issue #8), measured with a proxy for annotation effort.

    python3 benchmarks/suggest.py [--quick] [--no-write]

No person is timed here, so this reports a proxy, not minutes. The annotator labels the 10 default shots of
`builtin:faces64` (the label oracle's masks stand in for what the person wants) one after another. Without
suggest every shot starts as an empty canvas; with suggest, after the first k shots are done a head trained on
them pre-fills the rest, as `partseg annotate ui KIT --head HEAD` does. Effort is counted two ways:
(1) pixels whose label must be set or changed (from an empty canvas: every pixel that is not background, since
background is the fill the canvas starts with), and (2) strokes: connected regions (4-neighbourhood) of pixels to
change, each at least `--min-region` pixels, a stand-in for the brush strokes and fills the annotator makes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import machine, utc_now, write_section  # noqa: E402

from partseg.fewshot.learner import FewShotConfig, load_shots, train_head  # noqa: E402
from partseg.gan import load_generator  # noqa: E402
from partseg.gan.checkpoints import builtin_annotations  # noqa: E402


def regions(wrong: np.ndarray, min_size: int) -> int:
    """Connected regions (4-neighbourhood) of True pixels with at least min_size pixels (union-find)."""
    h, w = wrong.shape
    parent = np.arange(h * w)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    ys, xs = np.nonzero(wrong)
    for y, x in zip(ys.tolist(), xs.tolist(), strict=True):
        i = y * w + x
        if x + 1 < w and wrong[y, x + 1]:
            parent[find(i)] = find(i + 1)
        if y + 1 < h and wrong[y + 1, x]:
            parent[find(i)] = find(i + w)
    roots = [find(y * w + x) for y, x in zip(ys.tolist(), xs.tolist(), strict=True)]
    _, counts = np.unique(roots, return_counts=True) if roots else (None, np.array([]))
    return int((counts >= min_size).sum())


def effort(start: np.ndarray, target: np.ndarray, min_size: int) -> tuple[float, int]:
    """(share of pixels to change, strokes) to turn `start` into `target`; a stroke paints one class, so wrong
    pixels are split by the class they need."""
    wrong = start != target
    strokes = sum(regions(wrong & (target == c), min_size) for c in np.unique(target[wrong]))
    return float(wrong.mean()), strokes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--after", type=int, nargs="+", default=[1, 2, 3, 5], help="suggest after k shots are done")
    ap.add_argument("--head-steps", type=int, default=600)
    ap.add_argument("--min-region", type=int, default=2, help="smallest region counted as a stroke (pixels)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.after, args.head_steps = [1], 20
    G = load_generator("builtin:faces64")
    shots = load_shots(builtin_annotations("faces64"))
    truth = shots.masks.numpy().astype(np.uint8)
    n = len(truth)
    blank = np.zeros_like(truth[0])  # the canvas starts as background (class 0)
    scratch = [effort(blank, t, args.min_region) for t in truth]
    rows = [("from scratch (no suggest)", n, statistics.mean(p for p, _ in scratch),
             statistics.mean(s for _, s in scratch))]
    for k in args.after:
        head = train_head(G, shots.subset(list(range(k))), FewShotConfig(head="cnn", steps=args.head_steps, seed=0),
                          progress=False)
        with torch.no_grad():
            _, logp = head.predict_ws(G, shots.ws[k:], noise_mode=shots.noise_mode)
        if logp.shape[-1] != truth.shape[-1]:
            logp = torch.nn.functional.interpolate(logp, size=truth.shape[-2:], mode="bilinear", align_corners=False)
        pred = logp.argmax(1).numpy().astype(np.uint8)
        res = [effort(p, t, args.min_region) for p, t in zip(pred, truth[k:], strict=True)]
        base = scratch[k:]
        rows.append((f"suggest from a head on the first {k} shot(s)", n - k, statistics.mean(p for p, _ in res),
                     statistics.mean(s for _, s in res), statistics.mean(p for p, _ in base),
                     statistics.mean(s for _, s in base)))
        print(rows[-1], flush=True)
    table = ["| start | shots scored | pixels to change | strokes | same shots from scratch: pixels, strokes |",
             "| --- | ---: | ---: | ---: | --- |"]
    for r in rows:
        extra = f"{100 * r[4]:.1f} %, {r[5]:.1f}" if len(r) > 4 else ""
        table.append(f"| {r[0]} | {r[1]} | {100 * r[2]:.1f} % | {r[3]:.1f} | {extra} |")
    cmd = "python3 benchmarks/suggest.py " + " ".join(sys.argv[1:])
    text = f"""## Labeller "suggest": annotation effort (issue #8)

A proxy, not a stopwatch: no person was timed. The 10 default shots of `builtin:faces64` (64 px) are annotated in
order; the label oracle's masks stand in for what the annotator wants. Without suggest a shot starts as an all-
background canvas; with suggest, a CNN head ({args.head_steps} steps) trained on the first k finished shots
pre-fills the later ones. Pixels to change: share of the image whose label must be painted; strokes: connected
regions (4-neighbourhood, >= {args.min_region} px) of pixels to change, split by the class they need.

- Machine: {machine()}
- Command: `{cmd.strip()}`
- Date (UTC): {utc_now()}

{chr(10).join(table)}
"""
    print(text)
    if not args.no_write and not args.quick:
        write_section("suggest", text)


if __name__ == "__main__":
    main()
