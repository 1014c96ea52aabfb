"""Inference speed of a distilled UNet per backend, side by side in one run (issue #6).

    python3 benchmarks/inference.py [--unet UNET] [--sizes 256 512] [--batches 1 8 32] [--quick] [--no-write]

Every backend runs through the one runtime (`partseg.runtime.Segmenter`, native size, so pre- and post-processing
are included and identical), on the same uint8 images. For each (size, batch) the backends are interleaved
round by round (A, B, A, B, ...) so load from other jobs hits them alike; the median round is reported. The UNet's
FLOPs per image (torch.utils.flop_counter, multiply-add = 2 FLOPs) let you compute the distance to the hardware
floor. CPU backends: PyTorch eager fp32 (BatchNorm folded), PyTorch channels_last, onnxruntime CPU. On a GPU:
eager fp32, eager fp16 and bf16 with channels_last, torch.compile, onnxruntime CUDA (and its TensorRT provider),
and a TensorRT engine when TensorRT is installed. Without --unet a randomly initialised UNet of the distillation
default ([16, 32, 64, 128]) is used: speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import machine, utc_now, write_section  # noqa: E402

from export.onnx import export_onnx  # noqa: E402
from partseg.distill import DistillConfig  # noqa: E402
from partseg.labels import FACES  # noqa: E402
from partseg.runtime import OnnxRuntimeBackend, Segmenter, TorchBackend, read_onnx_info  # noqa: E402
from partseg.unet import UNet, UNetConfig, fold_batchnorm, load_unet, save_unet  # noqa: E402


def flops_per_image(model: torch.nn.Module, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 3, size, size))
    return float(fc.get_total_flops())


def backends(unet_path: Path, onnx_path: Path, gpu: bool, compile_: bool, threads: int) -> dict[str, Segmenter]:
    model, _ = load_unet(unet_path)
    info = read_onnx_info(onnx_path)
    folded = fold_batchnorm(model)
    out: dict[str, Segmenter] = {}

    def add(be) -> None:
        out[be.name] = Segmenter(be, info, input_size=None, max_batch=64)

    if gpu:
        add(TorchBackend(folded, "cuda"))
        add(TorchBackend(folded, "cuda", dtype=torch.float16, channels_last=True))
        add(TorchBackend(folded, "cuda", dtype=torch.bfloat16, channels_last=True))
        if compile_:
            add(TorchBackend(folded, "cuda", compile=True))
        add(OnnxRuntimeBackend(onnx_path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]))
        try:
            import tensorrt  # noqa: F401

            from export.tensorrt import build_engine  # written against TensorRT 10/11

            plan = onnx_path.with_suffix(".plan")
            build_engine(onnx_path, plan, min_shape=(1, 3, 256, 256), opt_shape=(8, 3, 256, 256),
                         max_shape=(32, 3, 512, 512))
            out["tensorrt"] = Segmenter.load(plan, input_size=None, max_batch=64)
        except ImportError as e:
            print(f"TensorRT engine skipped: {e}")
    else:
        add(TorchBackend(folded))
        add(TorchBackend(folded, channels_last=True))
        if compile_:
            add(TorchBackend(folded, compile=True))
        add(OnnxRuntimeBackend(onnx_path, providers=["CPUExecutionProvider"], threads=threads))
    return out


def time_round(seg: Segmenter, images: list[np.ndarray], gpu: bool) -> float:
    t0 = time.perf_counter()
    seg.predict(images)
    if gpu:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unet", type=Path, help="A distilled UNet file (default: a random one of the default size).")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--rounds", type=int, default=5, help="Timed rounds per backend and setting (after a warm-up).")
    ap.add_argument("--seconds", type=float, default=20.0, help="Fewer rounds when one setting would take longer.")
    ap.add_argument("--compile", action="store_true", help="Also time torch.compile (slow to warm up on CPU).")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help="CPU threads for every backend alike (PyTorch intra-op and onnxruntime intra-op).")
    ap.add_argument("--quick", action="store_true", help="256 px, batches 1 and 8, 2 rounds: a smoke run.")
    ap.add_argument("--no-write", action="store_true", help="Print only; leave BENCHMARKS.md alone.")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.batches, args.rounds = [256], [1, 8], 2
    gpu = torch.cuda.is_available()
    torch.set_num_threads(args.threads)
    cmd = "python3 benchmarks/inference.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        unet_path = args.unet
        if unet_path is None:
            torch.manual_seed(0)
            unet_path = Path(tmp) / "unet.safetensors"
            save_unet(UNet(UNetConfig(num_classes=len(FACES), channels=DistillConfig().channels)), unet_path, FACES,
                      extra={"train_resolution": "64"})
        onnx_path = Path(tmp) / "unet.onnx"
        export_onnx(unet_path, onnx_path)
        model, _ = load_unet(unet_path)
        segs = backends(unet_path, onnx_path, gpu, args.compile, args.threads)
        rng = np.random.default_rng(0)
        rows = []
        gflops_at = {size: flops_per_image(fold_batchnorm(model), size) / 1e9 for size in args.sizes}
        for size in args.sizes:
            gflops = gflops_at[size]
            for batch in args.batches:
                images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(batch)]
                for seg in segs.values():  # warm-up (and cuDNN / ORT algorithm selection)
                    time_round(seg, images, gpu)
                first = {n: time_round(s, images, gpu) for n, s in segs.items()}
                rounds = max(1, min(args.rounds, int(args.seconds / max(sum(first.values()), 1e-6))))
                times: dict[str, list[float]] = {n: [t] for n, t in first.items()}
                for _ in range(rounds - 1):
                    for n, s in segs.items():
                        times[n].append(time_round(s, images, gpu))
                base = statistics.median(times[next(iter(segs))])
                for n, ts in times.items():
                    med = statistics.median(ts)
                    rows.append((size, batch, n, len(ts), med * 1e3 / batch, batch / med, gflops * batch / med,
                                 base / med))
                    print(f"{size}px batch {batch:>2} {n:<28} {med * 1e3 / batch:8.2f} ms/img "
                          f"{batch / med:8.1f} img/s  x{base / med:.2f} vs {next(iter(segs))}", flush=True)
    device = torch.cuda.get_device_name() if gpu else "CPU"
    table = ["| size | batch | backend | rounds | ms / image | images / s | GFLOP/s | speed vs first row |",
             "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    table += [f"| {s} | {b} | {n} | {r} | {ms:.2f} | {ips:.1f} | {gf:.1f} | {x:.2f} |"
              for s, b, n, r, ms, ips, gf, x in rows]
    flop_line = ", ".join(f"{s} px: {g:.2f} GFLOP" for s, g in gflops_at.items())
    ort_rows = [r for r in rows if r[2].startswith("onnxruntime")]
    ips_of = {(r[0], r[1], r[2]): r[5] for r in rows}
    plain, cl = ("torch-cuda", "torch-cuda-float16-channels_last") if gpu else ("torch-cpu", "torch-cpu-channels_last")
    ratios = [f"{s} px batch {b}: x{ips / ips_of[(s, b, plain)]:.2f} (x{ips / ips_of[(s, b, cl)]:.2f} vs {cl})"
              for s, b, _, _, _, ips, _, _ in ort_rows if (s, b, plain) in ips_of and (s, b, cl) in ips_of]
    text = f"""## Inference speed per backend (issue #6)

UNet {model.cfg.channels} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, {len(FACES)} classes,
{'weights of ' + str(args.unet) if args.unet else 'random weights: speed does not depend on them'}), through
`partseg.runtime.Segmenter` at native size (uint8 in, index masks out: pre- and post-processing included). Backends
interleaved round by round; the median round is reported. FLOPs per image (multiply-add = 2): {flop_line}.
{'On CPU only ratios mean something: the machine is shared and absolute times vary.' if not gpu else ''}

- Machine: {machine()}; device: {device}; {args.threads} CPU thread(s) for every backend
- Command: `{cmd.strip()}`
- Date (UTC): {utc_now()}

{chr(10).join(table)}

onnxruntime vs PyTorch eager (images/s ratio; goal >= 1.5x on CPU): {'; '.join(ratios) or 'n/a'}.
The runtime's torch backend uses channels_last by default (the `torch-*-channels_last` rows).
"""
    print(text)
    if not args.no_write:
        write_section("inference", text)


if __name__ == "__main__":
    main()
