"""The prepared GPU check (issue #19): what only an NVIDIA GPU can measure, in one run within a time budget.

    bash benchmarks/gpu_check.sh [OUT_DIR]          # installs CUDA torch, onnxruntime-gpu and TensorRT, then runs:
    python3 benchmarks/gpu_check.py [--out FILE.md] [--budget 480] [--stages env,trt,speed,serve,gan] [--smoke-cpu]

Stages (each guarded: an error or a missing package is reported in its section, the next stage still runs):
- env: GPU, driver, versions; the achievable peaks measured here (dense matmul TF32 and bf16, device copy).
- trt: TensorRT FP16 engine of the label-oracle UNet, built by `export.tensorrt.build_engine`, and its parity
  with PyTorch fp32 (argmax agreement, mIoU against fp32 and against exact masks on held-out rendered faces).
- speed: eager fp32 (TF32 convs), eager bf16 channels_last, onnxruntime CUDA, TensorRT FP16 at 256 and 512 px,
  batch 1-32, timed on device tensors (network alone, CUDA events) and host to host (numpy in and out), with the
  roofline floor: max(FLOPs / peak, bytes / bandwidth), bytes = every conv's input, output and weights once.
- serve: benchmarks/serve_load.py as it is (concurrency 1/8/32, batching on and off) with onnxruntime's TensorRT
  execution provider, which the runtime picks on a GPU with TensorRT (its section is moved under the GPU heading
  and BENCHMARKS.md is restored).
- gan: `partseg gan train` with builtin:faces64's configuration on rendered faces for a few kimg: sec/kimg.

Writes FILE.md (BENCHMARKS.md sections under one "GPU check" heading) and FILE.json (raw results). Without an
NVIDIA GPU it writes a report saying so and exits 3; --smoke-cpu runs the env and speed stages on the CPU at toy
sizes instead, to test this script, and labels every figure as a CPU smoke run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
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


# ----------------------------------------------------------------------------------------------------- stages


def bench_unet(tmp: Path) -> Path:
    from inference import benchmark_unet

    return benchmark_unet(None, tmp)[0]


def measure_peaks(device: str, smoke: bool) -> dict[str, float]:
    """Achievable dense-matmul FLOP/s (fp32 with TF32 allowed, as cuDNN convs use by default; bf16) and copy B/s."""
    import torch

    n = 512 if smoke else 8192
    out: dict[str, float] = {}
    torch.backends.cuda.matmul.allow_tf32 = True
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, device=device, dtype=dt), torch.randn(n, n, device=device, dtype=dt)
        out[f"{name}_flops"] = 2 * n**3 / timed(lambda a=a, b=b: a @ b, device, 5 if smoke else 20)
    x = torch.empty(int((2**22 if smoke else 2**29) // 4), device=device)  # 16 MiB / 2 GiB of float32
    y = torch.empty_like(x)
    out["bytes_per_s"] = 2 * x.numel() * 4 / timed(lambda: y.copy_(x), device, 5 if smoke else 20)
    return out


def timed(fn: Callable[[], object], device: str, reps: int) -> float:
    """Median seconds of fn() (CUDA events on a GPU)."""
    import torch

    fn()
    times = []
    for _ in range(reps):
        if device.startswith("cuda"):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def stage_env(check: Check, device: str) -> tuple[str, object]:
    import onnxruntime as ort
    import torch
    from report import machine

    try:
        import tensorrt

        trt = tensorrt.__version__
    except ImportError as e:
        trt = f"not importable ({e})"
    gpu = torch.cuda.get_device_name() if device == "cuda" else "none (CPU smoke run)"
    smi = ""
    if shutil.which("nvidia-smi"):
        r = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        smi = r.stdout.strip()
    peaks = measure_peaks(device, check.smoke)
    check.raw["peaks"] = peaks
    raw = {"gpu": gpu, "nvidia_smi": smi, "torch": torch.__version__, "cuda": torch.version.cuda,
           "onnxruntime": ort.__version__, "providers": ort.get_available_providers(), "tensorrt": trt}
    text = (f"- Machine: {machine()}\n- GPU: {gpu} ({smi or 'nvidia-smi: n/a'})\n"
            f"- torch {torch.__version__} (CUDA {torch.version.cuda}), onnxruntime {ort.__version__} "
            f"({', '.join(ort.get_available_providers())}), TensorRT {trt}\n"
            f"- Peaks measured here: dense matmul fp32 (TF32 allowed) {peaks['fp32_flops'] / 1e12:.3g} TFLOP/s, "
            f"bf16 {peaks['bf16_flops'] / 1e12:.3g} TFLOP/s; device copy {peaks['bytes_per_s'] / 1e9:.3g} GB/s")
    return text, raw


def parity_faces(n: int = 100) -> tuple[list, list]:
    from partseg.faces import render_face
    from partseg.quantize import PARITY_SEED0

    faces = [render_face(s, 64) for s in range(PARITY_SEED0, PARITY_SEED0 + n)]
    return [f[0] for f in faces], [f[1] for f in faces]


def stage_trt(check: Check) -> tuple[str, object]:
    from export.tensorrt import build_engine
    from partseg.onnx_export import export_onnx
    from partseg.quantize import int8_parity
    from partseg.runtime import Segmenter

    unet = bench_unet(check.tmp)
    onnx_path = check.tmp / "unet.onnx"
    export_onnx(unet, onnx_path)
    plan = check.tmp / "unet_fp16.plan"
    t = time.monotonic()
    res = build_engine(onnx_path, plan, fp16=True, min_shape="1x3x64x64", opt_shape="8x3x256x256",
                       max_shape="32x3x512x512", timing_cache=check.tmp / "timing.cache")
    build_s = time.monotonic() - t
    check.raw["plan"] = str(plan)
    images, masks = parity_faces()
    ref = Segmenter.load(unet, backend="torch", device="cuda", channels_last=False)
    p = int8_parity(ref, Segmenter.load(plan), images, masks, "held-out rendered faces (64 px)")
    text = (f"Label-oracle UNet (64 px faces) -> ONNX -> TensorRT FP16 engine (profile 1x3x64x64 .. 32x3x512x512, "
            f"opt 8x3x256x256), built in {build_s:.0f} s. Parity of TensorRT FP16 against PyTorch fp32 on the GPU: "
            f"{p}.\n\nThe builder's own check against onnxruntime: "
            + "; ".join(str(q) for q in getattr(res, "parity", [])[:2]))
    return text, {"build_s": build_s, "parity": p.to_dict()}


def conv_traffic(model, size: int = 64) -> tuple[float, float]:
    """(activation elements every Conv2d reads and writes once for one image at `size`, weight elements): the
    memory floor. Both activations and FLOPs scale with the image area, so one small pass gives every size."""
    import torch

    act, weights = 0, 0

    def hook(mod, inp, out):
        nonlocal act, weights
        act += inp[0].numel() + out.numel()
        weights += sum(p.numel() for p in mod.parameters())

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in hs:
        h.remove()
    return float(act), float(weights)


def stage_speed(check: Check, device: str) -> tuple[str, object]:
    import numpy as np
    import torch
    from inference import flops_per_image

    from partseg.onnx_export import export_onnx
    from partseg.runtime import OnnxRuntimeBackend, TorchBackend
    from partseg.unet import fold_batchnorm, load_unet

    gpu = device == "cuda"
    sizes, batches = ([256, 512], [1, 8, 32]) if not check.smoke else ([64], [1, 2])
    unet = bench_unet(check.tmp)
    onnx_path = check.tmp / "unet.onnx"
    if not onnx_path.exists():
        export_onnx(unet, onnx_path)
    folded = fold_batchnorm(load_unet(unet)[0])
    base = 64
    flops64 = flops_per_image(folded, base)
    act64, weights = conv_traffic(folded, base)
    backends: dict[str, tuple[object, str, int]] = {}  # name -> (backend, peak key, bytes per element)
    # TorchBackend moves and converts the module it is given in place: each gets its own copy
    backends["eager fp32"] = (TorchBackend(copy.deepcopy(folded), device), "fp32", 4)
    backends["eager bf16 channels_last"] = (TorchBackend(copy.deepcopy(folded), device, torch.bfloat16,
                                                         channels_last=True), "bf16", 2)
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"]
    try:
        import onnxruntime as ort

        if hasattr(ort, "preload_dlls") and gpu:
            ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels
        backends["onnxruntime " + ("CUDA" if gpu else "CPU")] = (OnnxRuntimeBackend(onnx_path, providers), "fp32", 4)
    except Exception as e:  # noqa: BLE001 - reported in the section
        check.raw["ort_error"] = str(e)
    plan = check.raw.get("plan")
    if gpu and plan:
        from partseg.tensorrt_runtime import TensorRTBackend

        backends["TensorRT FP16"] = (TensorRTBackend(plan), "bf16", 2)  # fp16 and bf16 tensor-core peaks are equal
    peaks = check.raw.get("peaks") or measure_peaks(device, check.smoke)
    rows, raw = [], []
    for size in sizes:
        area = (size / base) ** 2
        for batch in batches:
            x_host = np.random.default_rng(0).uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
            x_dev = torch.from_numpy(x_host).to(device)
            for name, (be, peak, elem) in backends.items():
                on_dev = device_runner(be, x_dev)
                t_dev = timed(on_dev, device, 5 if check.smoke else 20) if on_dev else None
                t_host = timed(lambda be=be, x=x_host: be.run(x), device, 3 if check.smoke else 10)
                floor = max(flops64 * area * batch / peaks[f"{peak}_flops"],
                            (act64 * area * batch + weights) * elem / peaks["bytes_per_s"])
                r = {"size": size, "batch": batch, "backend": name, "device_ms_img": t_dev and 1e3 * t_dev / batch,
                     "host_ms_img": 1e3 * t_host / batch, "floor_ms_img": 1e3 * floor / batch}
                raw.append(r)
                dev_txt = f"{r['device_ms_img']:.3f}" if t_dev else "n/a"
                x_floor = f"{t_dev / floor:.1f}" if t_dev else "n/a"
                rows.append(f"| {size} | {batch} | {name} | {dev_txt} | {r['host_ms_img']:.3f} | "
                            f"{r['floor_ms_img']:.4f} | {x_floor} |")
                print(rows[-1], flush=True)
    table = ["| size | batch | backend | on device ms/img | host to host ms/img | roofline floor ms/img | "
             "x floor |", "| ---: | ---: | --- | ---: | ---: | ---: | ---: |", *rows]
    text = ("Label-oracle UNet [24, 48, 96, 192]. On device: input already on the GPU, output left there (CUDA "
            "events); host to host: numpy in, numpy out (the runtime's `Backend.run`). Roofline floor: max(FLOPs / "
            "peak matmul FLOP/s of that precision, bytes / device-copy bandwidth), bytes = each conv's input, output "
            "and weights once (no fusion across convs assumed); peaks as measured in the env section.\n\n"
            + "\n".join(table))
    if "ort_error" in check.raw:
        text += f"\n\nonnxruntime could not start: `{check.raw['ort_error']}`"
    return text, raw


def device_runner(be, x_dev) -> Callable[[], object] | None:
    """A closure running the backend on a device tensor, output left on the device (None: no such path)."""
    import numpy as np
    import torch

    if hasattr(be, "run_tensor"):
        return lambda: be.run_tensor(x_dev)
    if hasattr(be, "session") and x_dev.is_cuda:  # onnxruntime: IO binding on CUDA memory
        binding = be.session.io_binding()
        binding.bind_input(be.input_name, "cuda", 0, np.float32, tuple(x_dev.shape), x_dev.data_ptr())
        binding.bind_output(be.session.get_outputs()[0].name, "cuda")
        return lambda: be.session.run_with_iobinding(binding)
    if hasattr(be, "context"):  # TensorRT: the engine's context on torch buffers
        ctx = be.context
        inp = x_dev.to(be.input_dtype).contiguous()
        ctx.set_input_shape(be.input_name, tuple(inp.shape))
        out = torch.empty(tuple(ctx.get_tensor_shape(be.output_name)), dtype=be.output_dtype, device=x_dev.device)
        ctx.set_tensor_address(be.input_name, inp.data_ptr())
        ctx.set_tensor_address(be.output_name, out.data_ptr())
        stream = torch.cuda.current_stream()
        return lambda: ctx.execute_async_v3(stream.cuda_stream)
    return None


def stage_serve(check: Check) -> tuple[str, object]:
    from partseg.onnx_export import export_onnx
    from partseg.runtime import OnnxRuntimeBackend

    onnx_path = check.tmp / "unet.onnx"
    if not onnx_path.exists():
        export_onnx(bench_unet(check.tmp), onnx_path)
    cache = check.tmp / "ort-trt-cache"
    env = {**os.environ, "ORT_TENSORRT_FP16_ENABLE": "1", "ORT_TENSORRT_ENGINE_CACHE_ENABLE": "1",
           "ORT_TENSORRT_ENGINE_CACHE_PATH": str(cache), "ORT_TENSORRT_PROFILE_MIN_SHAPES": "image:1x3x64x64",
           "ORT_TENSORRT_PROFILE_OPT_SHAPES": "image:16x3x64x64", "ORT_TENSORRT_PROFILE_MAX_SHAPES": "image:32x3x64x64"}
    os.environ.update({k: v for k, v in env.items() if k.startswith("ORT_")})
    picked = OnnxRuntimeBackend(onnx_path).name  # what the service's runtime picks on this machine
    results = ROOT / "BENCHMARKS.md"
    before = results.read_bytes() if results.exists() else None
    try:
        r = subprocess.run([sys.executable, "benchmarks/serve_load.py", "--quick"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=max(60, check.left() - 5))
        after = results.read_text() if results.exists() else ""
    finally:
        if before is not None:
            results.write_bytes(before)
    start, end = "<!-- serve_load:start -->", "<!-- serve_load:end -->"
    if r.returncode != 0 or start not in after:
        raise RuntimeError(f"serve_load.py exited {r.returncode}: {(r.stdout + r.stderr)[-2000:]}")
    section = after[after.index(start) + len(start):after.index(end)].strip()
    section = section.replace("## HTTP service under load", "### HTTP service under load (serve_load.py's text)")
    text = (f"The runtime picked **{picked}** for the ONNX model on this machine (onnxruntime's TensorRT "
            f"execution provider, FP16, engine cache on, profile 1..32 x 3 x 64 x 64); serve_load.py's own text "
            f"below names the CPU setup it was written for.\n\n{section}")
    return text, {"backend": picked, "stdout_tail": r.stdout[-2000:]}


def stage_gan(check: Check) -> tuple[str, object]:
    data, run = check.tmp / "faces", check.tmp / "gan-run"
    cli = [sys.executable, "-m", "partseg.cli"]
    n, kimg = (200, 0.2) if check.smoke else (2000, 4.8)
    subprocess.run([*cli, "data", "synth", "--n", str(n), "--size", "64", "--workers", "8", "--out", str(data)],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    cmd = [*cli, "gan", "train", str(data / "images"), "--out", str(run), "--resolution", "64", "--kimg", str(kimg),
           "--batch", "32", "--z-dim", "256", "--w-dim", "256", "--channel-base", "2048", "--channel-max", "128",
           "--pl-weight", "0", "--ckpt-kimg", str(kimg), "--workers", "4"]
    t = time.monotonic()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(30, check.left() - 5))
    if r.returncode != 0:
        raise RuntimeError(f"gan train exited {r.returncode}: {(r.stdout + r.stderr)[-2000:]}")
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    steady = [rec["sec_per_kimg"] for rec in log[1:]] or [rec["sec_per_kimg"] for rec in log]
    text = (f"`partseg gan train` with builtin:faces64's configuration (64 px, batch 32, z/w 256, channel base 2048, "
            f"max 128, no path-length regularisation, bf16 autocast on GPU) on {n} rendered faces for {kimg} kimg "
            f"({time.monotonic() - t:.0f} s with start-up): **{statistics.median(steady):.2f} sec/kimg** (median "
            f"of the log windows after the first; all windows: {[rec['sec_per_kimg'] for rec in log]}). For "
            f"comparison, the 2-core CPU run of the same configuration logs about 57 sec/kimg.")
    return text, {"sec_per_kimg": statistics.median(steady), "log": log}


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
    ap.add_argument("--smoke-cpu", action="store_true", help="No GPU: run env and speed on the CPU at toy sizes.")
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
    stages = args.stages if ok else [s for s in args.stages if s in ("env", "speed")]
    check = Check(args.budget, smoke_cpu=not ok)
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
