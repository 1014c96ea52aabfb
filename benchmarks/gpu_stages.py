"""The stages of the prepared GPU check (benchmarks/gpu_check.py runs them; its docstring says what each does).

Each stage takes the running `Check` (its temporary folder, raw results, smoke flag and remaining budget) and
returns (markdown for its section, raw results for the JSON file).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

Check = Any  # gpu_check.Check (not imported: gpu_check imports this module)


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
    from partseg.data.faces import render_face
    from partseg.runtime.quantize import PARITY_SEED0

    faces = [render_face(s, 64) for s in range(PARITY_SEED0, PARITY_SEED0 + n)]
    return [f[0] for f in faces], [f[1] for f in faces]


def stage_trt(check: Check) -> tuple[str, object]:
    from partseg.runtime.onnx_export import export_onnx
    from partseg.runtime.quantize import int8_parity
    from partseg.runtime.segmenter import Segmenter
    from partseg.runtime.tensorrt_build import build_engine

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

    from partseg.distill.unet import fold_batchnorm, load_unet
    from partseg.runtime.onnx_export import export_onnx
    from partseg.runtime.segmenter import OnnxRuntimeBackend, TorchBackend

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
        ort_be = OnnxRuntimeBackend(onnx_path, providers)  # onnxruntime falls back to the CPU if CUDA cannot start
        backends[ort_be.name] = (ort_be, "fp32", 4)
        if gpu and "cuda" not in ort_be.name:
            check.raw["ort_error"] = f"the CUDA provider did not start; the session runs on {ort_be.name}"
    except Exception as e:  # noqa: BLE001 - reported in the section
        check.raw["ort_error"] = str(e)
    plan = check.raw.get("plan")
    if gpu and plan:
        from partseg.runtime.tensorrt import TensorRTBackend

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
        text += f"\n\nonnxruntime CUDA: `{check.raw['ort_error']}`"
    return text, raw


def device_runner(be, x_dev) -> Callable[[], object] | None:
    """A closure running the backend on a device tensor, output left on the device (None: no such path)."""
    import numpy as np
    import torch

    if hasattr(be, "run_tensor"):
        return lambda: be.run_tensor(x_dev)
    if hasattr(be, "session") and x_dev.is_cuda and "cuda" in be.name:  # onnxruntime: IO binding on CUDA memory
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
    import numpy as np

    from partseg.runtime.onnx_export import export_onnx
    from partseg.runtime.segmenter import OnnxRuntimeBackend

    onnx_path = check.tmp / "unet.onnx"
    if not onnx_path.exists():
        export_onnx(bench_unet(check.tmp), onnx_path)
    cache = check.tmp / "ort-trt-cache"
    env = {**os.environ, "ORT_TENSORRT_FP16_ENABLE": "1", "ORT_TENSORRT_ENGINE_CACHE_ENABLE": "1",
           "ORT_TENSORRT_ENGINE_CACHE_PATH": str(cache), "ORT_TENSORRT_PROFILE_MIN_SHAPES": "image:1x3x64x64",
           "ORT_TENSORRT_PROFILE_OPT_SHAPES": "image:16x3x64x64", "ORT_TENSORRT_PROFILE_MAX_SHAPES": "image:32x3x64x64"}
    os.environ.update({k: v for k, v in env.items() if k.startswith("ORT_")})
    be = OnnxRuntimeBackend(onnx_path)  # what the service's runtime picks on this machine
    picked = be.name
    be.run(np.zeros((1, 3, 64, 64), np.float32))  # builds (and caches) the provider's engine before the clients start
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
    warn = "" if "tensorrt" in picked else " **This is not the TensorRT provider: these are not TensorRT figures.**"
    text = (f"The runtime picked **{picked}** for the ONNX model on this machine (set for onnxruntime's TensorRT "
            f"provider: FP16, engine cache on, profile 1..32 x 3 x 64 x 64).{warn} serve_load.py's own text below "
            f"names the CPU setup it was written for.\n\n{section}")
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
