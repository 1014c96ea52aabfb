"""Peak memory and time of the four ways to read the paper's pixel features (issue #2), and of the few-shot
pipeline in bounded memory (issue #16, `--pipeline`).

    python3 benchmarks/feature_memory.py [--batches 1,4] [--repeats 3] [--no-write]
    python3 benchmarks/feature_memory.py --pipeline [--memory 4] [--cnn-steps 3] [--pairs 4] [--no-write]

A 256 px StyleGAN2 with the public rosinality config-f channel table (random weights: memory and time do
not depend on the values), the paper's layers (4864 channels), bilinear, 256 px output. Each mode runs in a
fresh subprocess and reports its RSS high-water mark (ru_maxrss); a baseline subprocess that only builds the
generator and runs synthesis for the same batch is subtracted, so the numbers are what reading the features
adds. Results replace this script's own section of BENCHMARKS.md and nothing else.

--pipeline: a 1024 px StyleGAN2 with the config-f channel table (random weights), the paper's layers (5056
channels) at the paper's 512 px feature size, under `--memory` GB: 10-shot CNN and MLP head training, prediction
of 8 images, distillation pairs; each in a fresh process, peak RSS of the whole process. Then argmax agreement of
tiled with whole-map prediction on a 256 px generator. Writes the section `feature_memory_pipeline`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import RESULTS, machine, write_section  # noqa: E402

RESOLUTION, SIZE, TILE, N_PIXELS = 256, 256, 64, 4096
MODES = {  # name -> what it measures
    "synthesis": "baseline: build G, run synthesis (subtracted from the others)",
    "full-fp32": "pixel_features, float32",
    "full-fp16": "pixel_features, dtype=float16",
    f"tiles-{TILE}": f"iter_feature_tiles, tile={TILE}, each tile summed then dropped",
    f"sample-{N_PIXELS}": f"sample_pixel_features, n_pixels={N_PIXELS}",
}


def child(mode: str, batch: int) -> dict:
    """Run one mode in this (fresh) process; return its peak RSS and the time of the measured step."""
    sys.path.insert(0, str(ROOT))
    import torch

    from partseg.features import (
        feature_channels,
        iter_feature_tiles,
        pixel_features,
        sample_pixel_features,
        stylegan_source,
    )
    from partseg.gan import Generator, GeneratorConfig, rosinality_channel_table

    torch.set_num_threads(2)
    torch.manual_seed(0)
    cfg = GeneratorConfig(resolution=RESOLUTION, z_dim=512, w_dim=512, n_mlp=8,
                          channels=rosinality_channel_table(RESOLUTION, 2))
    G = Generator(cfg).eval()
    src = stylegan_source(G)
    with torch.no_grad():
        ws = G.ws_from_z(torch.randn(batch, cfg.z_dim))
        t0 = time.perf_counter()
        src.activations(ws)  # every mode pays this once: the baseline's peak, and a warm-up for the others
        seconds = time.perf_counter() - t0

    if mode != "synthesis":
        t0 = time.perf_counter()
        if mode.startswith("full"):
            dtype = torch.float16 if mode == "full-fp16" else torch.float32
            feats = pixel_features(src, ws, size=SIZE, dtype=dtype)[1]
            # summed in slices: sum(dtype=float32) on the whole fp16 map would make a float32 copy of it
            check = sum(f.float().sum().item() for f in feats.split(64, dim=1))
        elif mode.startswith("tiles"):
            check = sum(t.sum().item() for _, _, t in iter_feature_tiles(src, ws, tile=TILE, size=SIZE))
        else:
            gen = torch.Generator().manual_seed(0)
            check = sample_pixel_features(src, ws, n_pixels=N_PIXELS, size=SIZE, generator=gen)[1].sum().item()
        seconds = time.perf_counter() - t0
        assert check == check, "NaN in features"
    maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {"mode": mode, "batch": batch, "maxrss_mb": maxrss_kb / 1024, "seconds": seconds,
            "channels": feature_channels(src)}


def run_child(mode: str, batch: int, repeats: int) -> dict:
    """Median over `repeats` fresh processes: a process's peak RSS alone varies by up to ~100 MB run to run."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--batch", str(batch)],
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {**runs[0], "maxrss_mb": statistics.median(r["maxrss_mb"] for r in runs),
            "seconds": statistics.median(r["seconds"] for r in runs)}




def section(rows: list[dict], command: str, repeats: int) -> str:

    ch = rows[0]["channels"]
    lines = [
        "## Feature memory (issue #2)",
        "",
        f"What reading the paper's pixel features costs: a {RESOLUTION} px StyleGAN2 with the rosinality config-f "
        f"channel table (random weights), the paper's layers ({ch} channels), bilinear, {SIZE} px output, "
        f"no autograd. Peak RSS: high-water mark (ru_maxrss) of a fresh process that builds the generator, runs "
        f"synthesis once, then the mode (which runs synthesis again). Above baseline: that minus the peak of a "
        f"process that only builds the generator and runs synthesis for the same batch, i.e. what reading the "
        f"features needs beyond running the generator. Memory that synthesis used only briefly is reused, so "
        f"this can be a little under the tensor sizes. Each number is the median of {repeats} fresh processes "
        f"(one process's peak varies by up to ~100 MB); differences within ~50 MB are noise. Times include "
        f"synthesis; they are CPU wall-clock on a shared machine: compare ratios, not seconds.",
        "",
        f"- Machine: {machine()}",
        f"- Command: `{command}`",
        f"- Date (UTC): {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M')}",
        "",
        "| batch | mode | full map, theory (MB) | peak RSS (MB) | above baseline (MB) | time (s) | time / full fp32 |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for batch in sorted({r["batch"] for r in rows}):
        base = next(r for r in rows if r["batch"] == batch and r["mode"] == "synthesis")
        full = next(r for r in rows if r["batch"] == batch and r["mode"] == "full-fp32")
        for r in (r for r in rows if r["batch"] == batch):
            theory = {"full-fp32": 4, "full-fp16": 2}.get(r["mode"])
            theory = f"{batch * ch * SIZE * SIZE * theory / 2**20:,.0f}" if theory else ""
            extra = "" if r is base else f"{r['maxrss_mb'] - base['maxrss_mb']:,.0f}"
            ratio = "" if r is base else f"{r['seconds'] / full['seconds']:.2f}"
            lines.append(f"| {batch} | {r['mode']}: {MODES[r['mode']]} | {theory} | {r['maxrss_mb']:,.0f} | {extra} | "
                         f"{r['seconds']:.2f} | {ratio} |")
    lines += ["", f"Theory for a tile: batch x {ch} x {TILE} x {TILE} x 4 bytes = "
              f"{ch * TILE * TILE * 4 / 2**20:.0f} MB per image; for the sampled pixels: batch x {N_PIXELS} x "
              f"{ch} x 4 bytes = {N_PIXELS * ch * 4 / 2**20:.0f} MB per image."]
    return "\n".join(lines)



# ----------------------------------------------------------------------------------------------------------
# Issue #16: the few-shot pipeline in bounded memory

PIPE_RES, PIPE_SIZE, N_SHOTS, N_PREDICT, AGREE_RES, AGREE_N = 1024, 512, 10, 8, 256, 4
PIPE_MODES = {
    "cnn-train": f"{N_SHOTS}-shot CNN head training",
    "mlp-train": f"{N_SHOTS}-shot MLP head training",
    "predict": f"prediction of {N_PREDICT} images (head, from latents)",
    "pairs": "distillation pairs (make_pairs: image + head labels)",
    "agree": f"tiled vs whole-map prediction, {AGREE_RES} px generator, {AGREE_N} images",
}


def pipe_child(mode: str, memory: float, cnn_steps: int, mlp_steps: int, pairs: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch

    from partseg.distill.autoshot import make_pairs
    from partseg.fewshot import crops, learner
    from partseg.fewshot.heads import Ensemble, HeadConfig
    from partseg.fewshot.learner import FewShotConfig, FewShotHead, Shots, train_head
    from partseg.fewshot.memory import GB, budget_bytes, head_margin, plan_prediction
    from partseg.gan import Generator, GeneratorConfig, rosinality_channel_table
    from partseg.gan.interface import as_fewshot_gan
    from partseg.labels import FACES

    torch.set_num_threads(1)
    res = AGREE_RES if mode == "agree" else PIPE_RES
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=res, z_dim=512, w_dim=512, n_mlp=8,
                                  channels=rosinality_channel_table(res, 2))).eval()
    fg = as_fewshot_gan(G)
    size = AGREE_RES if mode == "agree" else PIPE_SIZE
    channels = sum(fg.source("paper").channels.values())

    def latents(seeds: range) -> torch.Tensor:
        return fg.latents_from_z(torch.cat([fg.z_for_seed(s) for s in seeds]))

    def random_head() -> FewShotHead:
        torch.manual_seed(1)
        ens = Ensemble(HeadConfig(kind="cnn", in_channels=channels, num_classes=len(FACES))).eval()
        return FewShotHead(ens, FACES, {"layers": fg.source("paper").layers, "size": size, "mode": "bilinear",
                                        "noise_mode": "const", "gan_fingerprint": fg.fingerprint()})

    out: dict = {"mode": mode, "channels": channels, "resolution": res, "size": size}
    t0 = time.perf_counter()
    if mode.endswith("-train"):
        first = {}
        for cls in (crops.CachedShots, learner._WholeMaps):  # the first step's start: after the features/cache
            def timed(self, member, gen, _f=cls.loss):
                first.setdefault("t", time.perf_counter())
                return _f(self, member, gen)
            cls.loss = timed
        yy, xx = torch.meshgrid(torch.arange(res), torch.arange(res), indexing="ij")
        masks = torch.stack([((yy // 97 + xx // 131 + k) % len(FACES)) for k in range(N_SHOTS)]).long()
        masks[:, :, :8] = 255  # some unlabelled pixels, as in real annotations
        shots = Shots([f"s{i}" for i in range(N_SHOTS)], latents(range(N_SHOTS)), list(range(N_SHOTS)), "const",
                      masks, FACES)
        kind = mode.split("-")[0]
        steps = cnn_steps if kind == "cnn" else mlp_steps
        head = train_head(G, shots, FewShotConfig(head=kind, size=size, steps=steps), progress=False, memory=memory)
        end = time.perf_counter()
        out.update(steps=steps, setup_s=first["t"] - t0, step_s=(end - first["t"]) / steps, seconds=end - t0,
                   plan=head.meta.get("memory_plan", "whole maps"))
    elif mode == "predict":
        head = random_head()
        plan = plan_prediction(fg.source("paper"), N_PREDICT, size, head_margin(head.ensemble), len(FACES),
                               budget_bytes(memory))
        _, logp = head.predict_ws(G, latents(range(N_PREDICT)), memory=memory)
        assert logp.shape == (N_PREDICT, len(FACES), size, size) and bool(torch.isfinite(logp).all())
        out.update(seconds=time.perf_counter() - t0, images=N_PREDICT,
                   plan={"chunk": plan.chunk, "tile": plan.tile, "full": plan.full})
    elif mode == "pairs":
        head = random_head()
        head.memory = memory
        x, y = make_pairs(G, head, pairs, torch.Generator().manual_seed(0))
        assert x.shape == (pairs, 3, res, res) and y.shape == (pairs, res, res)
        out.update(seconds=time.perf_counter() - t0, pairs=pairs)
    else:  # agree: whole maps (one image per call, so they fit) against tiles under the budget
        head = random_head()
        agree = total = 0
        worst = 0.0
        for s in range(AGREE_N):
            ws = latents(range(s, s + 1))
            _, full = head.predict_ws(G, ws, memory=64)
            _, tiled = head.predict_ws(G, ws, tile=96)
            agree += int((full.argmax(1) == tiled.argmax(1)).sum())
            total += full.argmax(1).numel()
            worst = max(worst, float((full - tiled).abs().max()))
        out.update(seconds=time.perf_counter() - t0, agreement=agree / total, pixels=total, max_abs_logp=worst,
                   tile=96, margin=head_margin(head.ensemble))
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["budget_gb"] = budget_bytes(memory) / GB
    return out


def pipe_section(rows: list[dict], command: str, args) -> str:
    by = {r["mode"]: r for r in rows}
    ag = by.get("agree")
    lines = [
        "## Few-shot pipeline in bounded memory (issue #16)",
        "",
        f"A {PIPE_RES} px StyleGAN2 with the rosinality config-f channel table (random weights: memory and time do "
        f"not depend on the values), the paper's layers ({by['cnn-train']['channels']} channels) at the paper's "
        f"{PIPE_SIZE} px feature size, `--memory {args.memory}` (GB for feature maps, caches and head activations). "
        f"Whole maps would need {N_SHOTS} x {by['cnn-train']['channels']} x {PIPE_SIZE}^2 x 4 bytes = "
        f"{N_SHOTS * by['cnn-train']['channels'] * PIPE_SIZE ** 2 * 4 / 2**30:.0f} GB for 10 shots in float32, and "
        f"{by['cnn-train']['channels'] * PIPE_SIZE ** 2 * 4 / 2**30:.1f} GB per predicted image. Each row is one "
        f"fresh process (1 thread); peak RSS is the whole process's high-water mark (ru_maxrss), Python, torch and "
        f"the generator included. To keep the CPU time modest, training runs only a few steps (enough for peak "
        f"memory and per-step time; a real run repeats the same step 600 (CNN) or 1000 (MLP) times) and "
        f"distillation pairs are timed on {args.pairs} pairs, the time for 100 being that x 100 / {args.pairs} "
        f"(pairs are made one image at a time, so memory does not grow with their number). "
        f"The machine was shared with a GAN training job on the same 2 cores: times are upper bounds.",
        "",
        f"- Machine: {machine()}",
        f"- Command: `{command}`",
        f"- Date (UTC): {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M')}",
        "",
        "| stage | how it ran | peak RSS (MB) | time |",
        "| --- | --- | ---: | --- |",
    ]
    for m in ("cnn-train", "mlp-train"):
        r = by[m]
        plan = r["plan"]
        how = (f"crops of {plan['crop']} px (+30 px margin) from a {plan['cache_dtype']} cache" if m == "cnn-train"
               else f"sampled pixels from a {plan['cache_dtype']} cache") if isinstance(plan, dict) else plan
        lines.append(f"| {PIPE_MODES[m]} | {how} | {r['maxrss_mb']:,.0f} | features/cache {r['setup_s']:.0f} s, "
                     f"then {r['step_s']:.2f} s per step ({r['steps']} steps timed) |")
    r = by["predict"]
    plan = r["plan"]
    how = "whole maps" if plan["full"] else (f"{plan['chunk']} image(s) per pass, " +
                                             ("whole maps" if plan["tile"] >= PIPE_SIZE else
                                              f"tiles of {plan['tile']} px + 30 px margin"))
    lines.append(f"| {PIPE_MODES['predict']} | {how} | {r['maxrss_mb']:,.0f} | {r['seconds']:.0f} s "
                 f"({r['seconds'] / r['images']:.1f} s per image) |")
    r = by["pairs"]
    lines.append(f"| {PIPE_MODES['pairs']} | as prediction, labels at {PIPE_RES} px | {r['maxrss_mb']:,.0f} | "
                 f"{r['seconds'] / r['pairs']:.1f} s per pair measured on {r['pairs']}: ~"
                 f"{r['seconds'] / r['pairs'] * 100 / 60:.0f} min for 100 |")
    if ag:
        lines += ["", f"Tiled prediction against the whole-map path ({AGREE_RES} px config-f generator, features at "
                  f"{AGREE_RES} px, {ag['channels']} channels, a randomly initialised paper CNN head, tiles of "
                  f"{ag['tile']} px with its {ag['margin']} px margin, {AGREE_N} images, {ag['pixels']:,} pixels): "
                  f"argmax agreement {100 * ag['agreement']:.4f} %, largest log-probability difference "
                  f"{ag['max_abs_logp']:.1e} ({ag['seconds']:.0f} s, peak RSS {ag['maxrss_mb']:,.0f} MB with the "
                  f"whole maps). Target: peak RSS <= 6 GB for each stage above, agreement >= 99.99 %."]
    return "\n".join(lines)


def run_pipeline(args) -> None:
    rows = []
    for mode in PIPE_MODES:
        cmd = [sys.executable, __file__, "--pipe-child", mode, "--memory", str(args.memory), "--cnn-steps",
               str(args.cnn_steps), "--mlp-steps", str(args.mlp_steps), "--pairs", str(args.pairs)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"{mode} failed:\n{res.stderr[-3000:]}")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    command = " ".join(["python3 benchmarks/feature_memory.py", *sys.argv[1:]])
    text = pipe_section(rows, command, args)
    if args.no_write:
        print(text)
    else:
        write_section("feature_memory_pipeline", text)
        print(f"wrote the feature_memory_pipeline section of {RESULTS}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,4", help="comma-separated batch sizes")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per mode (the median is kept)")
    ap.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    ap.add_argument("--pipeline", action="store_true", help="issue #16: the few-shot stages at 1024 px, bounded memory")
    ap.add_argument("--memory", type=float, default=4.0, help="--pipeline: the stages' memory budget in GB")
    ap.add_argument("--cnn-steps", type=int, default=3, help="--pipeline: CNN training steps timed")
    ap.add_argument("--mlp-steps", type=int, default=20, help="--pipeline: MLP training steps timed")
    ap.add_argument("--pairs", type=int, default=4, help="--pipeline: distillation pairs timed")
    ap.add_argument("--pipe-child", help=argparse.SUPPRESS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.batch)))
        return
    if args.pipe_child:
        print(json.dumps(pipe_child(args.pipe_child, args.memory, args.cnn_steps, args.mlp_steps, args.pairs)))
        return
    if args.pipeline:
        run_pipeline(args)
        return

    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        for mode in MODES:
            rows.append(run_child(mode, batch, args.repeats))
            r = rows[-1]
            print(f"batch {batch} {mode:12s} maxrss {r['maxrss_mb']:8.0f} MB  {r['seconds']:6.2f} s", flush=True)
    command = " ".join(["python3 benchmarks/feature_memory.py", *sys.argv[1:]])
    text = section(rows, command, args.repeats)
    if args.no_write:
        print(text)
    else:
        write_section("feature_memory", text)
        print(f"wrote the feature_memory section of {RESULTS}")


if __name__ == "__main__":
    main()
