"""ONNX (from `partseg export onnx`) -> TensorRT engine plus its JSON sidecar, checked against onnxruntime.

The engine is built with TensorRT's ONNX parser and one optimisation profile on the input "image" (min/opt/max
NxCxHxW shapes, heights and widths in multiples of the UNet's stride). Every parser error is reported with its node
and description. A timing cache file, when given, is loaded (a cache from another GPU or TensorRT is replaced) and
saved back atomically, so rebuilds on the same machine skip most kernel timing.

FP16 differs between the two supported major versions:
- TensorRT 10: the network stays float32 and the FP16 builder flag lets TensorRT pick fp16 kernels where it likes
  (weak typing).
- TensorRT 11: weak typing and the FP16 flag are gone; every network is strongly typed, so the precision must be
  in the graph. `fp16_onnx` converts the model first (float16 weights and compute, float32 I/O) and the engine is
  built from that.

The engine and sidecar are staged in a temporary folder and compared with the ONNX file on onnxruntime
(`compare` on `parity_images` plus the profile's corner shapes); they are written to `out` (atomically) only if
the fp32 engine agrees on >= 99.9 % of pixels. For fp16 the agreement is measured and reported, not enforced.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from partseg.atomic import atomic_path, atomic_write_bytes
from partseg.runtime.segmenter import (
    ENGINE_SUFFIXES,
    ModelInfo,
    Parity,
    Segmenter,
    compare,
    parity_images,
    read_onnx_info,
)
from partseg.runtime.tensorrt import INPUT_NAME, EngineInfo, Shape, make_logger, require_tensorrt, write_engine_info

DEFAULT_MIN, DEFAULT_OPT, DEFAULT_MAX = "1x3x64x64", "8x3x256x256", "32x3x512x512"
DEFAULT_WORKSPACE_GIB = 4.0
CHANNELS = 3
FP16_MAX = float(np.finfo(np.float16).max)

# -------------------------------------------------------------------------------------------------------- shapes


def parse_shape(text: str | Shape, option: str = "shape") -> Shape:
    """"8x3x256x256" -> (8, 3, 256, 256); ValueError naming the option otherwise."""
    if isinstance(text, tuple | list):
        parts = [str(v) for v in text]
    else:
        parts = re.split(r"\s*[xX×,]\s*", str(text).strip())
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise ValueError(f"{option} {text!r}: expected four positive integers NxCxHxW, e.g. 8x3x256x256")
    shape = tuple(int(p) for p in parts)
    if min(shape) < 1:
        raise ValueError(f"{option} {text!r}: every dimension must be >= 1")
    return shape  # type: ignore[return-value]


def check_profile(lo: Shape, opt: Shape, hi: Shape, stride: int, channels: int = CHANNELS) -> None:
    """ValueError unless min <= opt <= max in every dimension, C == channels and H, W are multiples of stride."""
    named = (("--min", lo), ("--opt", opt), ("--max", hi))
    for option, s in named:
        if s[1] != channels:
            raise ValueError(f"{option} {_fmt(s)}: the model takes {channels} channels (NxCxHxW with C={channels})")
        off = [f"{d}={v}" for d, v in (("H", s[2]), ("W", s[3])) if v % stride]
        if off:
            raise ValueError(f"{option} {_fmt(s)}: {' and '.join(off)} not a multiple of the model's stride {stride} "
                             f"(every height and width the network sees is padded to one)")
    for i, dim in enumerate("NCHW"):
        if not lo[i] <= opt[i] <= hi[i]:
            raise ValueError(f"profile needs --min <= --opt <= --max in every dimension; {dim} is "
                             f"{lo[i]}, {opt[i]}, {hi[i]} ({_fmt(lo)}, {_fmt(opt)}, {_fmt(hi)})")


def _fmt(s: Shape | tuple[int, ...]) -> str:
    return "x".join(str(v) for v in s)


# -------------------------------------------------------------------------------------------------------- fp16 ONNX

# Inputs whose type the ONNX spec fixes to float32 (or leaves free of the data type): never converted.
FLOAT32_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}  # Resize roi (T2) and scales (float); Upsample scales (float)
DTYPE_ATTRS = {"Cast": "to", "RandomNormal": "dtype", "RandomUniform": "dtype", "RandomNormalLike": "dtype",
               "RandomUniformLike": "dtype", "EyeLike": "dtype", "Bernoulli": "dtype"}


def fp16_onnx(model: Any) -> Any:
    """A float16 copy of an ONNX model whose inputs and outputs stay float32, for strongly typed TensorRT builds.

    Why this and not a builder flag: TensorRT 11 removed `BuilderFlag.FP16` (weak typing) and builds every network
    strongly typed, so a tensor's type is what the graph says. NVIDIA's migration guide converts the ONNX model
    beforehand (ModelOpt AutoCast with `keep_io_types=True`); that and onnxconverter-common are large dependencies
    for what a partseg UNet needs (Conv, Relu, MaxPool, Resize, Concat, shape ops: all have fp16 kernels and no
    fp32-only sections), so this small converter does the same with the `onnx` package:
    - float32 initializers and Constant/ConstantOfShape values become float16 (ValueError if one overflows);
    - Cast/Random*/EyeLike targets of float32 become float16, so computed tensors follow;
    - inputs the ONNX spec fixes to float32 (Resize's roi and scales, Upsample's scales) stay float32: constants
      feeding only those are kept, computed tensors get a Cast back to float32;
    - a float32 graph input gets a Cast to float16 right after it and a float32 graph output is produced by a final
      Cast to float32, so the I/O stays float32. The engine then has the same interface as the fp32 one (the
      `Backend` contract: float32 in, float32 logits out), the runtime needs no host-side conversion, and the two
      casts cost one pass over the input and the logits.
    Integer tensors (shapes, sizes) are untouched. Subgraphs (If/Loop/Scan) and model-local functions are not
    supported (ValueError): the exported UNet has none. The result passes `onnx.checker` (full check).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    if len(m.functions):
        raise ValueError("fp16_onnx: models with local functions are not supported")
    for node in g.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ValueError(f"fp16_onnx: node {node.name or node.op_type} has a subgraph; not supported")

    inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    types: dict[str, int] = {}
    for vi in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]:
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    floats = {n for n, t in types.items() if t == FLOAT}
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for node in g.node:
        for i, name in enumerate(node.input):
            if name:
                consumers.setdefault(name, []).append((node, i))

    def fixed_float(node: Any, i: int) -> bool:
        return i in FLOAT32_INPUTS.get(node.op_type, ())

    def only_fixed(name: str) -> bool:
        uses = consumers.get(name, [])
        return bool(uses) and all(fixed_float(n, i) for n, i in uses)

    keep = {init.name for init in g.initializer if init.name in floats and only_fixed(init.name)}
    keep |= {o for node in g.node if node.op_type == "Constant" for o in node.output if o in floats and only_fixed(o)}
    graph_outputs = {o.name for o in g.output}
    keep -= graph_outputs

    def to_half(t: Any, what: str) -> Any:
        a = numpy_helper.to_array(t)
        finite = a[np.isfinite(a)]
        if finite.size and float(np.abs(finite).max()) > FP16_MAX:
            raise ValueError(f"fp16_onnx: {what} has values beyond the float16 range (+-{FP16_MAX:g})")
        return numpy_helper.from_array(a.astype(np.float16), t.name)

    for k, init in enumerate(g.initializer):
        if init.data_type == FLOAT and init.name not in keep:
            g.initializer[k].CopyFrom(to_half(init, f"initializer {init.name!r}"))

    for node in g.node:
        if node.op_type == "Constant" and node.output[0] in floats and node.output[0] not in keep:
            for a in list(node.attribute):
                if a.name == "value" and a.t.data_type == FLOAT:
                    a.t.CopyFrom(to_half(a.t, f"Constant {node.output[0]!r}"))
                elif a.name in ("value_float", "value_floats"):
                    arr = np.array(a.f if a.name == "value_float" else list(a.floats), dtype=np.float32)
                    node.attribute.remove(a)
                    node.attribute.append(helper.make_attribute("value", to_half(numpy_helper.from_array(arr),
                                                                                   f"Constant {node.output[0]!r}")))
        elif node.op_type == "ConstantOfShape":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == FLOAT:
                    a.t.CopyFrom(to_half(a.t, f"ConstantOfShape {node.output[0]!r}"))
        elif node.op_type in DTYPE_ATTRS:
            for a in node.attribute:
                if a.name == DTYPE_ATTRS[node.op_type] and a.i == FLOAT:
                    a.i = HALF

    taken = {n for node in g.node for n in (*node.input, *node.output)} | set(types)

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    def rename_uses(old: str, new: str, also_outputs: bool = False) -> None:
        for node in g.node:
            for i, n in enumerate(node.input):
                if n == old:
                    node.input[i] = new
            if also_outputs:
                for i, n in enumerate(node.output):
                    if n == old:
                        node.output[i] = new

    head, tail = [], []
    init_names = {i.name for i in g.initializer}
    for inp in g.input:
        if inp.name in init_names or inp.type.tensor_type.elem_type != FLOAT:
            continue
        half = fresh(f"{inp.name}_fp16")
        rename_uses(inp.name, half)
        head.append(helper.make_node("Cast", [inp.name], [half], to=HALF, name=fresh(f"cast_{inp.name}_to_fp16")))
    for out in g.output:
        if out.type.tensor_type.elem_type != FLOAT:
            continue
        if out.name in {i.name for i in g.input} | init_names:
            raise ValueError(f"fp16_onnx: graph output {out.name!r} is a graph input or initializer; not supported")
        half = fresh(f"{out.name}_fp16")
        rename_uses(out.name, half, also_outputs=True)
        tail.append(helper.make_node("Cast", [half], [out.name], to=FLOAT, name=fresh(f"cast_{out.name}_to_fp32")))

    converted = (floats - keep) | {n.output[0] for n in head} | {n.input[0] for n in tail}
    nodes = list(head)
    for node in g.node:
        for i, name in enumerate(node.input):
            if name and fixed_float(node, i) and name in converted:
                back = fresh(f"{name}_fp32")
                nodes.append(helper.make_node("Cast", [name], [back], to=FLOAT, name=fresh(f"cast_{name}_to_fp32")))
                node.input[i] = back
        nodes.append(node)
    nodes += tail
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]  # stale float32 annotations; the checker re-infers them
    m.doc_string = (m.doc_string + "\n" if m.doc_string else "") + "float16 compute, float32 I/O (partseg fp16_onnx)"
    onnx.checker.check_model(m, full_check=True)
    return m


# -------------------------------------------------------------------------------------------------------- build


@dataclass
class TensorRTExport:
    path: Path
    sidecar: Path
    info: EngineInfo
    parity: list[Parity]
    fp16_method: str | None  # how fp16 was obtained: "builder flag" (TensorRT 10) or "fp16 ONNX" (TensorRT 11)

    @property
    def worst(self) -> Parity:
        return min(self.parity, key=lambda p: (p.argmax_agreement, -p.max_abs_logit))


def _parity_batches(info: ModelInfo, lo: Shape, opt: Shape, hi: Shape) -> list[list[np.ndarray]]:
    """`parity_images` batches that fit the profile, plus noise at its corners (min, opt, max size, max batch)."""
    s = info.stride

    def fits(n: int, h: int, w: int) -> bool:
        h, w = -(-h // s) * s, -(-w // s) * s
        return lo[0] <= n <= hi[0] and lo[2] <= h <= hi[2] and lo[3] <= w <= hi[3]

    batches = [b for b in parity_images(info) if fits(len(b), *b[0].shape[:2])]
    rng = np.random.default_rng(1)
    corners = [(lo[0], lo[2], lo[3]), (max(lo[0], min(opt[0], 8)), opt[2], opt[3]), (lo[0], hi[2], hi[3]),
               (hi[0], lo[2], lo[3])]
    for n, h, w in dict.fromkeys(corners):
        batches.append([rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)])
    return batches


def _load_timing_cache(trt: Any, config: Any, path: Path | None) -> Any:
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, False):
        return cache
    warnings.warn(f"timing cache {path} was not accepted (made on another GPU or TensorRT version, or damaged); "
                  f"starting a new one", stacklevel=3)
    cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, False)
    return cache


def build_engine(onnx_path: str | os.PathLike, out: str | os.PathLike, fp16: bool = False,
                 min_shape: str | Shape = DEFAULT_MIN, opt_shape: str | Shape = DEFAULT_OPT,
                 max_shape: str | Shape = DEFAULT_MAX, workspace_gib: float = DEFAULT_WORKSPACE_GIB,
                 timing_cache: str | os.PathLike | None = None, min_agreement: float = 0.999,
                 verbose: bool = False) -> TensorRTExport:
    """Build, compare with onnxruntime, then write `out` and `out.json`; on CUDA device 0 (CUDA_VISIBLE_DEVICES
    picks the GPU). The engine is kept only if an fp32 build agrees on >= min_agreement of the pixels."""
    import onnx

    trt = require_tensorrt()
    onnx_path, out = Path(onnx_path), Path(out)
    if out.suffix.lower() not in ENGINE_SUFFIXES:
        raise ValueError(f"--out {out}: a TensorRT engine file ends in {', '.join(sorted(ENGINE_SUFFIXES))}")
    info = read_onnx_info(onnx_path)
    lo, opt, hi = (parse_shape(s, o) for s, o in ((min_shape, "--min"), (opt_shape, "--opt"), (max_shape, "--max")))
    check_profile(lo, opt, hi, info.stride)
    if not workspace_gib > 0:
        raise ValueError(f"--workspace-gib must be > 0, got {workspace_gib}")
    if not torch.cuda.is_available():
        raise RuntimeError("building a TensorRT engine needs an NVIDIA GPU, but torch sees no CUDA device "
                           f"(torch {torch.__version__}, CUDA build {torch.version.cuda})")
    cache_path = Path(timing_cache) if timing_cache is not None else None
    has_fp16_flag = hasattr(trt.BuilderFlag, "FP16")  # TensorRT 10 yes, TensorRT 11 no (strongly typed only)
    fp16_method = None if not fp16 else "builder flag" if has_fp16_flag else "fp16 ONNX"
    device = torch.device("cuda", 0)

    with tempfile.TemporaryDirectory(prefix="partseg-trt-") as tmp, torch.cuda.device(device):
        tmp = Path(tmp)
        source = onnx_path
        if fp16 and not has_fp16_flag:
            source = tmp / "model_fp16.onnx"
            onnx.save(fp16_onnx(onnx.load(str(onnx_path))), str(source))
        logger = make_logger(trt, verbose)
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # explicit batch is the only mode since TensorRT 10
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(source)):
            errors = [parser.get_error(i) for i in range(parser.num_errors)]
            lines = [f"  {e.code()} in node {e.node()} {e.node_name()!r} ({e.node_operator()}): {e.desc()}"
                     for e in errors]
            raise ValueError(f"{onnx_path}: TensorRT {trt.__version__}'s ONNX parser rejected the model "
                             f"({len(errors)} error{'s' if len(errors) != 1 else ''}):\n" + "\n".join(lines))
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        if names != [INPUT_NAME]:
            raise ValueError(f"{onnx_path}: expected one input named {INPUT_NAME!r} (from `partseg export onnx`), "
                             f"got {names}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
        if fp16 and has_fp16_flag:
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, lo, opt, hi)
        if config.add_optimization_profile(profile) < 0:
            raise ValueError(f"TensorRT rejected the profile --min {_fmt(lo)} --opt {_fmt(opt)} --max {_fmt(hi)} "
                             f"({logger.take_errors()})")
        cache = _load_timing_cache(trt, config, cache_path) if cache_path is not None else None
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise RuntimeError(f"TensorRT {trt.__version__} could not build an engine from {onnx_path} "
                               f"({logger.take_errors()}); try a larger --workspace-gib or a smaller --max")
        if cache is not None:  # the config's cache now holds this build's timings too
            atomic_write_bytes(bytes(memoryview(config.get_timing_cache().serialize())), cache_path)
        engine_bytes = bytes(memoryview(plan))
        del plan, builder, network, parser, config

        cap = torch.cuda.get_device_capability(device)
        meta = EngineInfo(model=info, tensorrt_version=trt.__version__, gpu=torch.cuda.get_device_name(device),
                          min_shape=lo, opt_shape=opt, max_shape=hi, precision="fp16" if fp16 else "fp32",
                          engine_bytes=len(engine_bytes),
                          extra={"compute_capability": f"{cap[0]}.{cap[1]}", "onnx": onnx_path.name,
                                 **({"fp16_method": fp16_method} if fp16_method else {})})
        staged = tmp / out.name
        staged.write_bytes(engine_bytes)
        write_engine_info(staged, meta)

        reference = Segmenter.load(onnx_path, input_size=None, max_batch=hi[0])
        candidate = Segmenter.load(staged, input_size=None, max_batch=hi[0])
        parity = [compare(reference, candidate, batch) for batch in _parity_batches(info, lo, opt, hi)]
        worst = min(parity, key=lambda p: p.argmax_agreement)
        if not fp16 and not worst.ok(min_agreement):
            raise RuntimeError(f"TensorRT engine from {onnx_path} failed its parity check against onnxruntime: "
                               f"{worst} (limit: agreement >= {100 * min_agreement}%); nothing was written")
        del candidate
        with atomic_path(out) as final:
            final.write_bytes(engine_bytes)
        sidecar = write_engine_info(out, meta)
    return TensorRTExport(out, sidecar, meta, parity, fp16_method)
