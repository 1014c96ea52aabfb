"""The prepared GPU check (issue #19): what only an NVIDIA GPU can measure, in one run within a time budget.

    bash benchmarks/gpu_check.sh [OUT_DIR]          # installs CUDA torch, onnxruntime-gpu and TensorRT, then runs:
    python3 benchmarks/gpu_check.py [--out FILE.md] [--budget 480] [--stages env,trt,speed,serve,gan] [--smoke-cpu]

Stages (each guarded: an error or a missing package is reported in its section, the next stage still runs):
- env: GPU, driver, versions; the achievable peaks measured here (dense matmul TF32 and bf16, device copy).
- trt: TensorRT FP16 engine of the label-oracle UNet, built by `partseg.runtime.tensorrt_build.build_engine`, and
  its parity with PyTorch fp32 (argmax agreement, mIoU against fp32 and against exact masks on held-out rendered faces).
- speed: eager fp32 (TF32 convs), eager bf16 channels_last, onnxruntime CUDA, TensorRT FP16 at 256 and 512 px,
  batch 1-32, timed on device tensors (network alone, CUDA events) and host to host (numpy in and out), with the
  roofline floor: max(FLOPs / peak, bytes / bandwidth), bytes = every conv's input, output and weights once.
- serve: benchmarks/serve_load.py as it is (concurrency 1/8/32, batching on and off) with onnxruntime's TensorRT
  execution provider, which the runtime picks on a GPU with TensorRT (its section is moved under the GPU heading
  and BENCHMARKS.md is restored).
- gan: `partseg gan train` with builtin:faces64's configuration on rendered faces for a few kimg: sec/kimg.

Writes FILE.md (BENCHMARKS.md sections under one "GPU check" heading) and FILE.json (raw results). Without an
NVIDIA GPU it writes a report saying so and exits 3; --smoke-cpu runs every stage but trt on the CPU at toy sizes
instead, to test this script, and labels every figure as a CPU smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

STAGES = ("env", "trt", "speed", "serve", "gan")
NO_GPU_EXIT = 3
STAGE_SECONDS = {"env": 20, "trt": 90, "speed": 150, "serve": 120, "gan": 90}  # what a stage needs to start


def gpu_status() -> tuple[bool, str]:
    """(usable, why): an NVIDIA GPU that CUDA torch can use."""
    smi = shutil.which("nvidia-smi")
    listed = ""
    if smi:
        r = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
        listed = r.stdout.strip() if r.returncode == 0 else ""
    try:
        import torch

        cuda, build = torch.cuda.is_available(), f"torch {torch.__version__} (CUDA build {torch.version.cuda})"
    except ImportError:
        cuda, build = False, "torch not installed"
    if cuda:
        return True, f"{listed or 'GPU'}; {build}"
    if not smi:
        return False, f"no NVIDIA GPU found: nvidia-smi is not installed and {build} sees no CUDA device"
    if not listed:
        return False, f"no NVIDIA GPU found: nvidia-smi lists no GPU and {build} sees no CUDA device"
    return False, f"nvidia-smi lists {listed}, but {build} cannot use it (a CPU-only torch build?)"


class Check:
    """Runs the stages within the budget and collects their markdown and raw results."""

    def __init__(self, budget: float, smoke_cpu: bool):
        self.t0, self.budget, self.smoke = time.monotonic(), budget, smoke_cpu
        self.sections: list[tuple[str, str]] = []
        self.raw: dict[str, object] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="partseg-gpu-check-"))

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)

    def run(self, name: str, fn: Callable[[], tuple[str, object]]) -> None:
        need = STAGE_SECONDS[name] * (0.1 if self.smoke else 1)
        if self.left() < need:
            self.sections.append((name, f"Skipped: {self.left():.0f} s of the {self.budget:g} s budget left, the "
                                        f"stage needs about {need:.0f} s."))
            return
        t = time.monotonic()
        print(f"[gpu_check] stage {name} ({self.left():.0f} s left)", flush=True)
        try:
            text, raw = fn()
            self.raw[name] = raw
        except Exception as e:  # noqa: BLE001 - a failed stage is a result too; the next stage still runs
            text = f"Failed: `{type(e).__name__}: {e}`\n\n```\n{traceback.format_exc()[-3000:]}\n```"
            self.raw[name] = {"error": f"{type(e).__name__}: {e}"}
        self.sections.append((name, f"{text}\n\n(stage time {time.monotonic() - t:.0f} s)"))


# ----------------------------------------------------------------------------------------------------- report


def render(check: Check | None, why: str, command: str, smoke: bool) -> str:
    from report import utc_now

    if check is None:
        return (f"# GPU check: not run on a GPU\n\n{why}.\n\nNothing was measured. Run `bash benchmarks/gpu_check.sh` "
                f"on a machine with an NVIDIA GPU.\n\n- Command: `{command}`\n- Date (UTC): {utc_now()}\n")
    title = ("# GPU check: CPU smoke run (tests the script; these are NOT GPU figures)" if smoke else
             "# GPU check (NVIDIA GPU): results of benchmarks/gpu_check.sh")
    names = {"env": "Machine and peaks", "trt": "TensorRT FP16 engine: build and parity",
             "speed": "Inference speed and roofline floor", "serve": "HTTP service with the TensorRT backend",
             "gan": "GAN training speed"}
    parts = [title, "", f"{why}. Budget {check.budget:.0f} s, used {time.monotonic() - check.t0:.0f} s.", "",
             f"- Command: `{command}`", f"- Date (UTC): {utc_now()}", ""]
    prefix = "CPU smoke" if smoke else "GPU"
    for name, text in check.sections:
        parts += [f"<!-- gpu_{name}:start -->", f"## {prefix}: {names[name]}", "", text.strip(),
                  f"<!-- gpu_{name}:end -->", ""]
    return "\n".join(parts)


def write_atomic(path: Path, text: str) -> None:
    from partseg.atomic import atomic_write_text

    atomic_write_text(text, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(os.environ.get("OUT") or ROOT / "gpu_check") / "BENCHMARKS_gpu.md"
    ap.add_argument("--out", type=Path, default=default_out, help=f"Report file (default: {default_out}).")
    ap.add_argument("--budget", type=float, default=480.0, help="Seconds for all stages together (default 480).")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"Comma-separated subset of {','.join(STAGES)}.")
    ap.add_argument("--smoke-cpu", action="store_true", help="No GPU: run the stages but trt on the CPU at toy sizes.")
    args = ap.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        ap.error(f"--stages: unknown {unknown or 'empty list'}; choose from {', '.join(STAGES)}")
    if args.budget <= 0:
        ap.error(f"--budget must be > 0 seconds, got {args.budget:g}")
    if args.out.suffix.lower() != ".md":
        ap.error(f"--out {args.out}: the report is markdown; name it *.md (raw results go beside it as *.json)")
    args.stages = stages
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python3 benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:])
    ok, why = gpu_status()
    if not ok and not args.smoke_cpu:
        write_atomic(args.out, render(None, why, command, False))
        print(f"gpu_check: {why}. Nothing measured; wrote {args.out}", flush=True)
        return NO_GPU_EXIT
    device = "cuda" if ok else "cpu"
    stages = args.stages if ok else [s for s in args.stages if s != "trt"]  # the rest also runs on a CPU
    check = Check(args.budget, smoke_cpu=not ok)
    from gpu_stages import stage_env, stage_gan, stage_serve, stage_speed, stage_trt

    runners = {"env": lambda: stage_env(check, device), "trt": lambda: stage_trt(check),
               "speed": lambda: stage_speed(check, device), "serve": lambda: stage_serve(check),
               "gan": lambda: stage_gan(check)}
    for name in stages:
        check.run(name, runners[name])
    for name in args.stages:
        if name not in stages:
            check.sections.append((name, "Not run: this stage needs an NVIDIA GPU."))
    text = render(check, why if ok else f"CPU smoke run: {why}", command, not ok)
    write_atomic(args.out, text)
    write_atomic(args.out.with_suffix(".json"), json.dumps(check.raw, indent=1, default=str))
    shutil.rmtree(check.tmp, ignore_errors=True)
    print(text, flush=True)
    failed = [n for n, r in check.raw.items() if isinstance(r, dict) and "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
