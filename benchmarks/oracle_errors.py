"""Where the label oracle's errors are (issue #3): on part boundaries, a pixel at most from the truth.

    python3 benchmarks/oracle_errors.py

Scores the shipped oracle (`load_oracle()`, flip-averaged) on the 1000 held-out renders that
`benchmarks/oracle.py` scores it on, and asks how much of its shortfall from mIoU 1 is sub-pixel geometry:
the share of its errors on boundary pixels (another class within one pixel), its IoU when boundaries
misplaced by one pixel are forgiven (`TolerantScoreAccumulator`), how thin each part is, and how far two
definitions of the masks (majority of 2 x 2 or of 8 x 8 samples per pixel) disagree at 64, 128 and 256 px.
Writes its BENCHMARKS.md section and docs/oracle_errors.png (renders, truth, oracle, errors in red).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from oracle import label_definition_agreement  # noqa: E402
from PIL import Image  # noqa: E402
from report import machine, utc_now, write_section  # noqa: E402

from partseg.data.faces import render_batch  # noqa: E402
from partseg.eval.metrics import (  # noqa: E402
    ScoreAccumulator,
    SegScores,
    TolerantScoreAccumulator,
    boundary_pixels,
)
from partseg.eval.oracle import ORACLE_EVAL_SEED0, load_oracle, predict_labels, to_input  # noqa: E402
from partseg.labels import FACES  # noqa: E402

FIGURE = ROOT / "docs" / "oracle_errors.png"


def error_sheet(images: np.ndarray, truth: np.ndarray, pred: np.ndarray, path: Path, zoom: int = 4) -> None:
    """One row per face: render, true mask, oracle's mask, and the render greyed with errors in red."""
    rows = []
    for img, t, p in zip(images, truth, pred, strict=True):
        grey = np.repeat(img.mean(-1, keepdims=True), 3, -1) * 0.6 + 40
        grey[t != p] = (255, 0, 0)
        rows.append(np.concatenate([img, FACES.colorize(t), FACES.colorize(p), grey.astype(np.uint8)], 1))
    sheet = Image.fromarray(np.concatenate(rows, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.resize((sheet.width * zoom, sheet.height * zoom), Image.NEAREST).save(path)


def score(pred: torch.Tensor, truth: torch.Tensor) -> tuple[SegScores, TolerantScoreAccumulator]:
    """Exact scores and scores with one pixel of boundary tolerance."""
    exact, tolerant = ScoreAccumulator(len(FACES)), TolerantScoreAccumulator(len(FACES), radius=1)
    exact.add(pred, truth)
    tolerant.add(pred, truth)
    return exact.scores(), tolerant


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-eval", type=int, default=1000)
    ap.add_argument("--n-128", type=int, default=200, help="faces for the mask-definition spread at 128 px")
    ap.add_argument("--n-256", type=int, default=50, help="faces for the mask-definition spread at 256 px")
    ap.add_argument("--also", type=Path, help="other oracle weights (e.g. a further training stage) to score on "
                    "the same renders, for comparison; the shipped oracle stays as it is")
    ap.add_argument("--also-what", default="not shipped", help="what --also is, in a few words, for the report")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    t0 = time.time()
    k, names = len(FACES), list(FACES.names)
    images, masks = render_batch(range(ORACLE_EVAL_SEED0, ORACLE_EVAL_SEED0 + args.n_eval))
    pred, _ = predict_labels(load_oracle(), to_input(images))
    truth = torch.from_numpy(masks).long()
    s, tolerant = score(pred, truth)
    also = ""
    if args.also:
        other, other_tol = score(predict_labels(load_oracle(args.also), to_input(images))[0], truth)
        also = (f"For comparison, `{args.also.relative_to(ROOT) if args.also.is_absolute() else args.also}` "
                f"({args.also_what}) scores mIoU {other.miou:.3f} on the same renders, {other_tol.miou:.3f} with "
                f"1 px tolerance; eye {other.iou[FACES.index('eye')]:.3f}, eyebrow "
                f"{other.iou[FACES.index('eyebrow')]:.3f}.")
        print(also)
    edge = boundary_pixels(truth, k)
    wrong = pred != truth
    err_on_edge = float((wrong & edge).sum() / wrong.sum().clamp(min=1))
    spread = {64: label_definition_agreement(args.n_eval, 64).scores(),
              128: label_definition_agreement(args.n_128, 128).scores(),
              256: label_definition_agreement(args.n_256, 256).scores()}
    rows = []
    for c, name in enumerate(names):
        cls = truth == c
        per_img = cls.flatten(1).sum(1)
        med = float(per_img[per_img > 0].float().median()) if (per_img > 0).any() else float("nan")
        on_edge = float((cls & edge).sum() / cls.sum().clamp(min=1))
        rows.append(f"| {name} | {s.iou[c]:.3f} | {tolerant.iou[c]:.3f} | {on_edge:.0%} | {med:.0f} | "
                    + " | ".join(f"{spread[r].iou[c]:.3f}" for r in (64, 128, 256)) + " |")
    print("\n".join(rows))
    print(f"mIoU {s.miou:.4f}, with 1 px tolerance {tolerant.miou:.4f}; errors on boundary pixels "
          f"{err_on_edge:.1%} ({time.time() - t0:.0f} s)")
    if args.no_write:
        return
    error_sheet(images[:8], masks[:8], pred[:8].numpy().astype(np.uint8), FIGURE)
    text = "\n".join([
        "## Label oracle: where its errors are (issue #3)",
        "",
        f"The shipped oracle (flip-averaged, as `load_oracle()` runs it) on the {args.n_eval} held-out renders of "
        f"the section above. A boundary pixel has another class within one pixel (8-neighbourhood). The tolerant "
        f"IoU forgives a boundary misplaced by one pixel and nothing else: a part missed or invented away from a "
        f"true one still costs in full (`partseg.eval.metrics.TolerantScoreAccumulator`; at 0 px it is the IoU). The "
        f"last three columns score the shipped mask definition (majority of 2 x 2 samples per pixel) against the "
        f"same faces' masks from 8 x 8 samples per pixel, rendered at 64 px ({args.n_eval} faces), 128 px "
        f"({args.n_128}) and 256 px ({args.n_256}).",
        "",
        f"- Machine: {machine()}",
        "- Command: `python3 benchmarks/oracle_errors.py"
        + (f" --also {args.also} --also-what '{args.also_what}'" if args.also else "") + "`",
        f"- Date (UTC): {utc_now()}",
        "",
        "| class | oracle IoU | IoU, 1 px tolerance | its pixels on a boundary | pixels per face (median) "
        "| 2x2 vs 8x8 masks, 64 px | 128 px | 256 px |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        f"| **mean** | **{s.miou:.3f}** | **{tolerant.miou:.3f}** | | | {spread[64].miou:.3f} | "
        f"{spread[128].miou:.3f} | {spread[256].miou:.3f} |",
        "",
        f"{err_on_edge:.1%} of the oracle's wrong pixels are boundary pixels ({float(edge.float().mean()):.1%} "
        f"of all pixels are). Forgiving one pixel of boundary placement lifts its mIoU from {s.miou:.3f} to "
        f"{tolerant.miou:.3f}. At 64 px an eye or an eyebrow is a dozen pixels per face, every one of them on a "
        f"boundary, so one pixel wrong per part costs it about a tenth of its IoU: mIoU 0.95 asks for boundaries "
        f"placed to a fraction of a pixel through blur and noise, closer than the two mask definitions agree with "
        f"each other at 64 px or at 128 px. Errors, row by row (render, truth, oracle, wrong pixels in red): "
        f"`docs/oracle_errors.png`.",
        *(["", also] if also else []),
    ])
    write_section("oracle_errors", text)
    print("results -> BENCHMARKS.md, docs/oracle_errors.png")


if __name__ == "__main__":
    main()
