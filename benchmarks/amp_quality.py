"""bf16 autocast against float32 in GAN training (issue #14, item 3): does bf16 hurt losses or samples?

    python3 benchmarks/amp_quality.py --run runs/faces128 [--kimg 2 --n 500 --threads 1 --no-write]

Two forks of one training state (the run's checkpoint), trained on for --kimg with the same data order, latents
and noise (the trainer seeds every step), differing only in `amp`: float32 against bf16 autocast. Reported: the
fork window's mean losses and logits from each fork's log, seconds per kimg, and the label oracle's view of n
samples of each fork's EMA generator next to the starting point's (pixel share of the small parts, mean
max-softmax, Fréchet distance of oracle bottleneck features to n held-out aligned renders). How far either fork
moves from the start says how large a difference --kimg of training makes at all. The snapshot and the forks live
in runs/amp_quality/ and resume if interrupted (delete the folder to fork a newer state). Writes the section
"amp-quality" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from generator_gates import oracle_view, renders  # noqa: E402
from report import machine, utc_now, write_section  # noqa: E402

from partseg.eval.metrics import frechet_distance  # noqa: E402
from partseg.eval.oracle import ORACLE_EVAL_SEED0, ORACLES, load_oracle  # noqa: E402
from partseg.gan import load_generator  # noqa: E402
from partseg.gan.sampling import sample  # noqa: E402
from partseg.gan.train import TrainConfig, train  # noqa: E402
from partseg.labels import FACES  # noqa: E402

RUN_FILES = ("checkpoint.pt", "config.json", "log.jsonl")
SMALL = ("eye", "eyebrow", "nose", "mouth", "ear")
LOSSES = ("loss_G", "loss_D", "D_real", "D_fake", "r1_penalty")


def copy_run(src: Path, dest: Path) -> None:
    if not (dest / "checkpoint.pt").exists():
        dest.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:  # the checkpoint last: its presence marks a complete copy
            shutil.copy2(src / name, dest / f".{name}.tmp")
        for name in (*RUN_FILES[1:], RUN_FILES[0]):
            (dest / f".{name}.tmp").rename(dest / name)


def fork(snapshot: Path, dest: Path, amp: str, kimg: float, start: int) -> Path:
    """Copy the snapshot into dest (once) and train it on for kimg with the given precision."""
    copy_run(snapshot, dest)
    cfg = TrainConfig.from_dict(json.loads((snapshot / "config.json").read_text()))
    cfg.amp, cfg.workers = amp, 1
    cfg.kimg = (start + round(kimg * 1000 / cfg.batch)) * cfg.batch / 1000
    cfg.ckpt_kimg = cfg.kimg  # one checkpoint at the end (Ctrl-C still writes one)
    res = train(cfg, dest)
    if res["stopped_early"]:
        sys.exit(f"{dest} stopped at step {res['step']}; run again to resume")
    return dest


def window(folder: Path, start: int) -> dict:
    """Mean of each logged value over the records after the fork point."""
    recs = [json.loads(x) for x in (folder / "log.jsonl").read_text().splitlines()]
    recs = [r for r in recs if r.get("step", 0) > start]
    return {k: sum(r[k] for r in recs if k in r) / max(1, sum(k in r for r in recs)) for k in (*LOSSES, "sec_per_kimg")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "faces128")
    ap.add_argument("--kimg", type=float, default=2.0)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.chdir(ROOT)  # the run's data path is relative to the repository root
    base = ROOT / "runs" / "amp_quality"
    snapshot = base / "start"  # taken once: the live run moves on
    copy_run(args.run, snapshot)
    ckpt = torch.load(snapshot / "checkpoint.pt", weights_only=True, map_location="cpu")
    start, start_kimg = int(ckpt["step"]), int(ckpt["nimg"]) / 1000
    del ckpt
    forks = {amp: fork(snapshot, base / amp, amp, args.kimg, start) for amp in ("off", "bf16")}
    oracle = load_oracle(ORACLES["aligned"])
    G0 = load_generator(snapshot)  # a run folder loads its checkpoint's EMA generator: the forks' starting point
    views = {"start": oracle_view(oracle, sample(G0, args.n, seed=100_000, batch=50).images)}
    for amp, folder in forks.items():
        G = load_generator(folder / "generator.safetensors")
        views[amp] = oracle_view(oracle, sample(G, args.n, seed=100_000, batch=50).images)
    ren = oracle_view(oracle, renders(args.n, G0.resolution, "aligned", ORACLE_EVAL_SEED0))
    small = [FACES.names.index(c) for c in SMALL]
    names = {"start": f"start (step {start}, {start_kimg:.1f} kimg)", "off": "fork, float32",
             "bf16": "fork, bf16 autocast"}
    rows = []
    for key, v in views.items():
        win = window(forks[key], start) if key in forks else None
        shares = " | ".join(f"{v['share'][i] / ren['share'][i]:.0%}" for i in small)
        losses = " | ".join(f"{win[k]:.3f}" for k in LOSSES) if win else " | ".join("-" for _ in LOSSES)
        speed = f"{win['sec_per_kimg']:.0f}" if win else "-"
        rows.append(f"| {names[key]} | {losses} | {speed} | {shares} | {v['confidence']:.3f} | "
                    f"{frechet_distance(v['features'], ren['features']):.3f} |")
    text = "\n".join([
        "## GAN training in bf16 against float32: losses and samples (issue #14)",
        "",
        f"Two forks of the faces128 training state at step {start}, trained on for {args.kimg:g} kimg each with the "
        "same data order, latents and noise, one in float32 and one with bf16 autocast; the losses are the means "
        f"over the fork's logged records, the samples are {args.n} EMA-generator samples (seeds 100000+, no "
        f"truncation) seen by the aligned label oracle against {args.n} held-out aligned renders: the small parts' "
        f"pixel share as a fraction of the renders', the mean max-softmax (renders: {ren['confidence']:.3f}) and "
        "the Fréchet distance of oracle bottleneck features to the renders.",
        "",
        f"- Machine: {machine()}",
        f"- Command: `python3 benchmarks/amp_quality.py --kimg {args.kimg:g} --n {args.n} --threads {args.threads}`",
        f"- Date (UTC): {utc_now()}",
        "",
        "| generator | " + " | ".join(LOSSES) + " | s/kimg | " + " | ".join(f"{c} share" for c in SMALL)
        + " | max-softmax | FD to renders |",
        "| --- | " + " | ".join("---:" for _ in range(len(LOSSES) + len(SMALL) + 3)) + " |",
        *rows,
    ])
    print(text)
    if not args.no_write:
        write_section("amp-quality", text)


if __name__ == "__main__":
    main()
