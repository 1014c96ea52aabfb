"""Peak memory and time of the four ways to read the paper's pixel features (issue #2).

    python3 benchmarks/feature_memory.py [--batches 1,4] [--repeats 3] [--no-write]

A 256 px StyleGAN2 with the public rosinality config-f channel table (random weights: memory and time do
not depend on the values), the paper's layers (4864 channels), bilinear, 256 px output. Each mode runs in a
fresh subprocess and reports its RSS high-water mark (ru_maxrss); a baseline subprocess that only builds the
generator and runs synthesis for the same batch is subtracted, so the numbers are what reading the features
adds. Results replace this script's own section of BENCHMARKS.md and nothing else.
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




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,4", help="comma-separated batch sizes")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per mode (the median is kept)")
    ap.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.batch)))
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
