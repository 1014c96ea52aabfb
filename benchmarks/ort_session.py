"""onnxruntime CPU session settings, one at a time against the runtime's defaults, side by side in one run (#19).

    python3 benchmarks/ort_session.py [--unet UNET] [--rounds 7] [--int8] [--no-write]

Each variant changes one field of `partseg.runtime.segmenter.OrtSettings` (graph optimisation level, intra-/inter-op
threads and execution mode, memory pattern, CPU arena, thread spinning). All sessions run the same float32 ONNX
export of the UNet (by default the label oracle's trained weights, as in benchmarks/inference.py) on the same
inputs; the variants are interleaved round by round (so load from other jobs hits them alike) and the median
round is reported as a ratio to the defaults. Network only: the inputs are prepared once, so the figures are
the session's own. --int8 times the INT8 model the same way.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from inference import benchmark_unet  # noqa: E402
from report import machine, utc_now, write_section  # noqa: E402

from partseg.runtime.onnx_export import export_onnx  # noqa: E402
from partseg.runtime.segmenter import OnnxRuntimeBackend, OrtSettings  # noqa: E402

BASE = OrtSettings()
VARIANTS: dict[str, OrtSettings] = {
    "defaults (all optimisations, intra threads = cores, sequential, mem pattern, arena, no spinning)": BASE,
    "graph optimisation: disable": replace(BASE, optimization="disable"),
    "graph optimisation: basic": replace(BASE, optimization="basic"),
    "graph optimisation: extended": replace(BASE, optimization="extended"),
    "intra-op threads: 1": replace(BASE, intra_threads=1),
    f"intra-op spinning {'off' if BASE.spinning else 'on'}": replace(BASE, spinning=not BASE.spinning),
    "execution mode parallel, inter-op threads 2": replace(BASE, parallel=True, inter_threads=2),
    "memory pattern off": replace(BASE, mem_pattern=False),
    "CPU memory arena off": replace(BASE, cpu_arena=False),
}
SETTINGS = ((256, 1), (256, 8), (512, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unet", type=Path, help="A UNet file (default: the label oracle's weights).")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--int8", action="store_true", help="Time the INT8 export instead of float32.")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    cmd = "python3 benchmarks/ort_session.py " + " ".join(sys.argv[1:])
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        unet, what = benchmark_unet(args.unet, Path(tmp))
        onnx_path = Path(tmp) / "model.onnx"
        if args.int8:
            from partseg.runtime.quantize import export_int8

            export_int8(unet, onnx_path, gan="builtin:faces64")
        else:
            export_onnx(unet, onnx_path)
        sessions = {name: OnnxRuntimeBackend(onnx_path, providers=["CPUExecutionProvider"], settings=s)
                    for name, s in VARIANTS.items()}
        for size, batch in SETTINGS:
            x = rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
            times: dict[str, list[float]] = {n: [] for n in sessions}
            for be in sessions.values():  # warm-up: memory pattern and arena are set up on the first run
                be.run(x)
            for _ in range(args.rounds):
                for n, be in sessions.items():
                    t0 = time.perf_counter()
                    be.run(x)
                    times[n].append(time.perf_counter() - t0)
            base = statistics.median(times[next(iter(sessions))])
            for n, ts in times.items():
                med = statistics.median(ts)
                rows.append((size, batch, n, med * 1e3 / batch, base / med))
                print(f"{size}px batch {batch} {n:<60} {med * 1e3 / batch:8.2f} ms/img x{base / med:.2f}", flush=True)
    names = list(VARIANTS)
    table = ["| setting | " + " | ".join(f"{s} px batch {b}: ms/img (x vs defaults)" for s, b in SETTINGS) + " |",
             "| --- |" + " ---: |" * len(SETTINGS)]
    for n in names:
        cells = [f"{ms:.1f} (x{x:.2f})" for s, b, m, ms, x in rows if m == n]
        table.append(f"| {n} | " + " | ".join(cells) + " |")
    text = f"""## onnxruntime CPU session settings, {'INT8' if args.int8 else 'float32'} model (issue #19)

{what}; {'INT8' if args.int8 else 'float32'} ONNX, network only (inputs prepared once), CPUExecutionProvider.
Each row changes one `partseg.runtime.segmenter.OrtSettings` field from the runtime's defaults; all sessions are
interleaved round by round and the median of {args.rounds} rounds is reported, with its ratio to the defaults
(above 1: faster). The machine is shared with a GAN training job on both cores, so only ratios within this table
mean something, and the thread rows measure contention as much as the setting.

- Machine: {machine()}
- Command: `{cmd.strip()}`
- Date (UTC): {utc_now()}

{chr(10).join(table)}
"""
    print(text)
    if not args.no_write:
        write_section("ort_session" + ("_int8" if args.int8 else ""), text)


if __name__ == "__main__":
    main()
