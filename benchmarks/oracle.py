"""The label oracle (issue #3): train a UNet on rendered faces with exact masks, score it on held-out renders.

The shipped oracle is trained in two stages (each resumes if interrupted: re-run the same command):

    OMP_NUM_THREADS=1 python3 benchmarks/oracle.py --workers 1                      # stage 1: runs/oracle64
    python3 benchmarks/oracle.py --stage2                                           # stage 2: runs/oracle64-ft
    python3 benchmarks/oracle.py --stage3                                           # stage 3: runs/oracle64-ft2

Stage 1: 4000 steps on 10k faces rendered afresh for every batch, cross-entropy. Stage 2 starts from stage 1's
weights: 20k faces rendered once (runs/oracle64-cache.npz), left-right flips, cross-entropy + 0.5 soft Dice,
a new cosine schedule; the checkpoint that scores best on 200 validation renders (seeds 8,000,000+) is kept.
Stage 3 (optional) goes on from stage 2's best weights (or --init) on 40k faces at a third of the learning rate.
At the end the weights are copied to partseg/weights/oracle_faces64.safetensors and per-class IoU on 1000
held-out renders (seeds 9,000,000+, never trained or validated on) is written to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from report import machine, utc_now, write_section  # noqa: E402

from partseg.data.faces import render_batch, render_params, sample_params  # noqa: E402
from partseg.distill.trainer import SegTrainConfig  # noqa: E402
from partseg.distill.unet import UNet, load_unet  # noqa: E402
from partseg.eval.metrics import ScoreAccumulator  # noqa: E402
from partseg.eval.oracle import (  # noqa: E402
    DEFAULT_ORACLE,
    ORACLE_EVAL_SEED0,
    ORACLE_VAL_SEED0,
    FlipAveraged,
    evaluate_on_renders,
    segmenter_scores,
    to_input,
    train_oracle,
)
from partseg.labels import FACES  # noqa: E402

CHANNELS = [24, 48, 96, 192]


def label_definition_agreement(n: int, size: int = 64) -> ScoreAccumulator:
    """How much the masks depend on how they are defined: the held-out faces' masks (majority of 2 x 2
    samples per pixel, as shipped) scored against the same geometry sampled 8 x 8 per pixel, at `size` px.

    Parts a few pixels wide are decided by sub-pixel geometry; this says how far two reasonable definitions of
    "the" mask disagree, which is the scale of what the oracle must infer from blurred, noisy pixels.
    """
    acc = ScoreAccumulator(len(FACES))
    for seed in range(ORACLE_EVAL_SEED0, ORACLE_EVAL_SEED0 + n):
        p = sample_params(seed)
        coarse, fine = render_params(p, size, 2)[1], render_params(p, size, 8)[1]
        acc.add(torch.from_numpy(coarse[None]).long(), torch.from_numpy(fine[None]).long())
    return acc


def _log(run: Path) -> list[dict]:
    path = run / "log.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


def validation_curve(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["val"]) for r in _log(run) if "val" in r]


def logged_train_minutes(run: Path) -> float:
    """Training time by the logged speed (sec_per_step of each logged stretch), however often the run resumed."""
    total, prev = 0.0, 0
    for r in _log(run):
        if "sec_per_step" in r:
            total += r["sec_per_step"] * (r["step"] - prev)
            prev = r["step"]
    return total / 60


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage2", action="store_true", help="fine-tune stage 1's weights (see the module docstring)")
    ap.add_argument("--stage3", action="store_true", help="fine-tune stage 2's best weights on 40k fresh faces "
                    "at a lower learning rate (see the module docstring)")
    ap.add_argument("--init", type=Path, help="stage 2/3: start from these weights instead of the previous "
                    "stage's run folder (e.g. the shipped oracle)")
    ap.add_argument("--steps", type=int, help="default: 4000 (stage 1), 10000 (stage 2), 4000 (stage 3)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--n-eval", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md or the shipped weights")
    args = ap.parse_args()
    stage1_run = ROOT / "runs" / "oracle64"

    stage = 3 if args.stage3 else 2 if args.stage2 else 1
    runs = {1: stage1_run, 2: ROOT / "runs" / "oracle64-ft", 3: ROOT / "runs" / "oracle64-ft2"}
    run = runs[stage]
    if stage == 1:
        steps, n_train = args.steps or 4000, 10_000
        cfg = SegTrainConfig(steps=steps, lr=2e-3, warmup=100, ckpt_every=200, log_every=50)
        model, res = train_oracle(run, n_train=n_train, batch=args.batch, channels=CHANNELS, cfg=cfg,
                                  workers=args.workers)
        if res["stopped_early"]:
            raise SystemExit(f"stopped at step {res['step']} of {steps}; checkpoint in {run}. Run the same command "
                             f"to resume.")
        weights = run / "model.safetensors"
        recipe = (f"{steps} steps of {args.batch} on {n_train} faces rendered afresh for every batch, "
                  f"cross-entropy, AdamW, cosine schedule")
    else:
        prev = {2: stage1_run / "model.safetensors", 3: runs[2] / "best.safetensors"}[stage]
        init = args.init or prev
        if not init.exists() and not (run / "checkpoint.pt").exists():
            raise SystemExit(f"stage {stage} starts from {init}: run stage {stage - 1} first (or pass --init)")
        val_imgs, val_masks = render_batch(range(ORACLE_VAL_SEED0, ORACLE_VAL_SEED0 + 200))
        val_x = to_input(val_imgs)

        def validate(m: UNet) -> float:
            return segmenter_scores(m, val_x, val_masks).miou

        if stage == 2:
            steps, n_train, lr, cache = args.steps or 10_000, 20_000, 1e-3, "oracle64-cache.npz"
        else:
            steps, n_train, lr, cache = args.steps or 4000, 40_000, 3e-4, "oracle64-cache40k.npz"
        cfg = SegTrainConfig(steps=steps, lr=lr, warmup=200, ckpt_every=250, log_every=50, dice_weight=0.5)
        model, res = train_oracle(run, n_train=n_train, batch=args.batch, channels=CHANNELS, cfg=cfg,
                                  workers=args.workers, cache=ROOT / "runs" / cache, init=init, validate=validate,
                                  val_every=500)
        if res["stopped_early"]:
            raise SystemExit(f"stopped at step {res['step']} of {steps}; checkpoint in {run}. Run the same command "
                             f"to resume.")
        weights = run / "best.safetensors"
        model, _ = load_unet(weights)
        best_step = load_unet(weights, with_meta=True)[2].get("step", "?")
        s2 = steps if stage == 2 else 10_000
        recipe = (f"stage 1 (4000 steps of 32 on 10k faces, cross-entropy), then stage 2: {s2} steps of 32 on "
                  "20000 faces with left-right flips, cross-entropy + 0.5 soft Dice, AdamW, cosine schedule from "
                  "lr 1e-3, keeping the step that scores best on 200 validation renders")
        if stage == 3:
            recipe += (f", then stage 3: {steps} steps of {args.batch} on {n_train} faces, the same loss, from lr "
                       f"{lr:g}")
        recipe += f" (best step {best_step} of the last stage)"
    plain = evaluate_on_renders(model, n=args.n_eval, progress=True)
    scores = evaluate_on_renders(FlipAveraged(model), n=args.n_eval, progress=True)  # as load_oracle() runs it
    print(scores.table(list(FACES.names)))
    print(f"mIoU {scores.miou:.4f} (without flip averaging {plain.miou:.4f}), "
          f"pixel accuracy {scores.pixel_accuracy:.4f}")
    if args.no_write:
        return
    DEFAULT_ORACLE.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, DEFAULT_ORACLE)
    cmd = "python3 benchmarks/oracle.py" + {1: "", 2: " --stage2", 3: " --stage3"}[stage] + (
        f" --steps {args.steps}" if args.steps else "") + (
        f" --init {args.init}" if args.init and stage > 1 else "")
    ref = label_definition_agreement(args.n_eval).scores()
    share = scores.confusion.sum(1).float() / scores.confusion.sum()
    rows = [f"| {n} | {a:.3f} | {b:.3f} | {c:.1%} |" for n, a, b, c in
            zip(FACES.names, scores.iou.tolist(), ref.iou.tolist(), share.tolist(), strict=True)]
    curve = validation_curve(run)
    curve_text = (f"Validation mIoU (200 renders, seeds 8,000,000+) during stage {stage}: "
                  + ", ".join(f"{v:.3f} at step {st}" for st, v in curve) + ".") if curve else ""
    text = "\n".join([
        "## Label oracle (issue #3)",
        "",
        f"A UNet (channels {CHANNELS}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters) trained "
        f"on rendered 64 px faces with exact masks ({recipe}), scored on {args.n_eval} held-out renders (seeds "
        f"9,000,000+, never trained on). Weights: `partseg/weights/oracle_faces64.safetensors`. "
        f"`load_oracle()` averages the logits of each image and its mirror image (the classes have no left/right); "
        f"the IoUs below are of that oracle (a single pass scores mIoU {plain.miou:.3f}).",
        "",
        f"- Machine: {machine()}",
        f"- Command: `{cmd}` (training: {logged_train_minutes(run):.0f} min by the logged speed on this machine"
        + "".join(f" after stage {i}'s {logged_train_minutes(runs[i]):.0f} min" for i in range(stage - 1, 0, -1))
        + ")",
        f"- Date (UTC): {utc_now()}",
        "",
        "| class | oracle IoU | 2x2- vs 8x8-sampled masks | pixels |",
        "| --- | ---: | ---: | ---: |",
        *rows,
        f"| **mean** | **{scores.miou:.3f}** | {ref.miou:.3f} | |",
        "",
        f"Pixel accuracy {scores.pixel_accuracy:.4f}. Target (issue #3): mIoU >= 0.95, "
        f"{'met' if scores.miou >= 0.95 else 'not met'}. The small parts (eye, eyebrow, ear, mouth: 0.3-0.5% of "
        f"the pixels each, a few pixels wide at 64 px) carry the mean; their errors sit on part boundaries. "
        f"The third column scores the shipped masks (majority of 2 x 2 samples per pixel) against masks of the "
        f"same faces sampled 8 x 8 per pixel: at 64 px two reasonable definitions of a thin part's mask already "
        f"differ by that much, so what is left for the oracle to get right is sub-pixel geometry seen through "
        f"blur and noise.",
        "",
        curve_text,
    ])
    write_section("oracle", text)
    print(f"weights -> {DEFAULT_ORACLE}; results -> BENCHMARKS.md")


if __name__ == "__main__":
    main()
