"""TensorRT export and runtime: shape options, the engine sidecar and version check, the CLI without TensorRT, and
the fp16 ONNX conversion (all run here); an engine build and its masks against onnxruntime (TensorRT + GPU only)."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from partseg.cli import app
from partseg.labels import FACES
from partseg.runtime.onnx_export import export_onnx
from partseg.runtime.segmenter import ModelInfo, Segmenter, compare, parity_images
from partseg.runtime.tensorrt import (
    TENSORRT_MISSING,
    EngineInfo,
    EngineVersionError,
    TensorRTBackend,
    check_engine_version,
    read_engine_info,
    read_engine_sidecar,
    sidecar_path,
    write_engine_info,
)
from partseg.runtime.tensorrt_build import check_profile, fp16_onnx, parse_shape

try:
    import tensorrt  # noqa: F401

    HAVE_TRT = True
except ImportError:
    HAVE_TRT = False

INSTALL = "pip install 'partseg[tensorrt]'"


@pytest.fixture(scope="module")
def onnx_file(unet_file, tmp_path_factory):
    """The small UNet of conftest.unet_file, exported."""
    return export_onnx(unet_file, tmp_path_factory.mktemp("trt") / "model.onnx").path


# ---------------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("text,shape", [("1x3x64x64", (1, 3, 64, 64)), ("8X3x256x256", (8, 3, 256, 256)),
                                        (" 32 x 3 x 512 x 512 ", (32, 3, 512, 512)), ((2, 3, 8, 16), (2, 3, 8, 16))])
def test_parse_shape(text, shape):
    assert parse_shape(text) == shape


@pytest.mark.parametrize("text", ["1x3x64", "1x3x64x64x1", "ax3x64x64", "0x3x64x64", "-1x3x64x64", "1x3x64.5x64",
                                  "", "1 3 64 64"])
def test_parse_shape_rejects(text):
    with pytest.raises(ValueError, match="--opt.*NxCxHxW|--opt.*>= 1"):
        parse_shape(text, "--opt")


@pytest.mark.parametrize("lo,opt,hi,match", [
    ((1, 3, 60, 64), (1, 3, 64, 64), (1, 3, 64, 64), r"--min 1x3x60x64: H=60 not a multiple of the model's stride 8"),
    ((1, 3, 64, 64), (1, 3, 64, 70), (1, 3, 64, 80), r"--opt .*W=70 not a multiple"),
    ((1, 4, 64, 64), (1, 4, 64, 64), (1, 4, 64, 64), r"--min 1x4x64x64: the model takes 3 channels"),
    ((2, 3, 64, 64), (1, 3, 64, 64), (4, 3, 64, 64), r"N is 2, 1, 4"),
    ((1, 3, 64, 64), (1, 3, 128, 64), (1, 3, 96, 64), r"--min <= --opt <= --max.*H is 64, 128, 96"),
])
def test_check_profile_rejects(lo, opt, hi, match):
    with pytest.raises(ValueError, match=match):
        check_profile(lo, opt, hi, stride=8)


def test_check_profile_accepts_equal_shapes():
    check_profile((1, 3, 64, 64), (1, 3, 64, 64), (1, 3, 64, 64), stride=8)


# ---------------------------------------------------------------------------------------------------- sidecar


def _engine_info(engine_bytes: int, version: str = "10.13.3.9") -> EngineInfo:
    return EngineInfo(model=ModelInfo(FACES, 8, 64, source="unet.safetensors"), tensorrt_version=version,
                      gpu="NVIDIA H100 80GB HBM3", min_shape=(1, 3, 64, 64), opt_shape=(8, 3, 256, 256),
                      max_shape=(32, 3, 512, 512), precision="fp16", engine_bytes=engine_bytes,
                      extra={"fp16_method": "builder flag"})


@pytest.fixture
def fake_engine(tmp_path):
    """An engine file (its bytes are never parsed without TensorRT) and its sidecar."""
    path = tmp_path / "model.plan"
    path.write_bytes(b"not really an engine")
    write_engine_info(path, _engine_info(path.stat().st_size))
    return path


def test_sidecar_round_trip(fake_engine):
    assert sidecar_path(fake_engine).name == "model.plan.json"
    info = read_engine_info(fake_engine)
    assert info.labels.names == FACES.names and info.stride == 8 and info.input_size == 64
    meta = read_engine_sidecar(fake_engine)
    assert meta.tensorrt_version == "10.13.3.9" and meta.gpu.startswith("NVIDIA")
    assert (meta.min_shape, meta.opt_shape, meta.max_shape) == ((1, 3, 64, 64), (8, 3, 256, 256), (32, 3, 512, 512))
    assert meta.precision == "fp16" and meta.extra == {"fp16_method": "builder flag"}
    raw = json.loads(sidecar_path(fake_engine).read_text())
    assert raw["format"] == "partseg.segmenter" and raw["input"] == "image" and raw["output"] == "logits"


def test_missing_engine(tmp_path):
    with pytest.raises(FileNotFoundError, match="TensorRT engine not found"):
        read_engine_info(tmp_path / "nope.plan")


def test_missing_sidecar(fake_engine):
    sidecar_path(fake_engine).unlink()
    with pytest.raises(FileNotFoundError, match=r"sidecar model\.plan\.json is missing.*partseg export tensorrt"):
        read_engine_info(fake_engine)


@pytest.mark.parametrize("name", ["model.onnx", "model.safetensors", "model.plan.json", "model"])
def test_wrong_file_type(tmp_path, name):
    (tmp_path / name).write_bytes(b"x")
    with pytest.raises(ValueError, match="not a TensorRT engine file"):
        read_engine_info(tmp_path / name)


def test_engine_path_is_a_folder(tmp_path):
    (tmp_path / "model.engine").mkdir()
    with pytest.raises(ValueError, match="a folder"):
        read_engine_info(tmp_path / "model.engine")


@pytest.mark.parametrize("edit,match", [
    (lambda d: "{not json", "not a JSON sidecar"),
    (lambda d: json.dumps([1, 2]), "not a JSON sidecar"),
    (lambda d: json.dumps({k: v for k, v in d.items() if k != "tensorrt_version"}), "lacks tensorrt_version"),
    (lambda d: json.dumps({**d, "format": "other"}), "no partseg metadata"),
    (lambda d: json.dumps({**d, "max_shape": [32, 3, 512]}), "max_shape must be 4 positive integers"),
    (lambda d: json.dumps({**d, "engine_bytes": 123456}), "different builds"),
])
def test_bad_sidecar(fake_engine, edit, match):
    side = sidecar_path(fake_engine)
    side.write_text(edit(json.loads(side.read_text())))
    with pytest.raises(ValueError, match=match):
        read_engine_info(fake_engine)


# ---------------------------------------------------------------------------------------------------- versions


@pytest.mark.parametrize("built,installed", [("10.13.3.9", "10.13.3"), ("10.0.1", "10.0.1"),
                                             ("11.1.0", "11.1.0.post1")])
def test_same_release_passes(built, installed):
    check_engine_version(built, installed)


@pytest.mark.parametrize("built,installed", [("10.13.3.9", "10.14.1"), ("10.16.1", "11.1.0"), ("11.0.0", "11.0.1")])
def test_other_release_is_a_clear_error(built, installed):
    with pytest.raises(EngineVersionError, match=rf"m\.plan: engine built for TensorRT {built}, this is {installed}; "
                                                 r"rebuild it with `partseg export tensorrt`"):
        check_engine_version(built, installed, "m.plan")


def test_backend_checks_the_version_before_anything_else(fake_engine, monkeypatch):
    """The sidecar's version is compared with the installed module's before the engine is touched (so no GPU)."""
    stub = types.ModuleType("tensorrt")
    stub.__version__ = "11.1.0"
    monkeypatch.setitem(sys.modules, "tensorrt", stub)
    with pytest.raises(EngineVersionError, match="engine built for TensorRT 10.13.3.9, this is 11.1.0"):
        TensorRTBackend(fake_engine)
    with pytest.raises(EngineVersionError, match="this is 11.1.0"):
        Segmenter.load(fake_engine)


# ---------------------------------------------------------------------------------------------------- without TensorRT


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed")
def test_backend_without_tensorrt(fake_engine):
    with pytest.raises(ImportError, match=r"TensorRT is not installed: `pip install 'partseg\[tensorrt\]'`"):
        Segmenter.load(fake_engine)


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed")
def test_cli_without_tensorrt_exits_2(tmp_path):
    r = CliRunner().invoke(app, ["export", "tensorrt", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "m.plan")])
    assert r.exit_code == 2, r.output
    assert TENSORRT_MISSING in " ".join(r.output.split()) or INSTALL in r.output
    assert not (tmp_path / "m.plan").exists()


def test_cli_rejects_a_bad_shape(tmp_path):
    r = CliRunner().invoke(app, ["export", "tensorrt", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "m.plan"),
                                 "--max", "32x3x512"])
    assert r.exit_code == 2 and "--max '32x3x512': expected four positive integers" in r.output


# ---------------------------------------------------------------------------------------------------- fp16 ONNX


def test_fp16_onnx_keeps_float32_io_and_agrees(onnx_file, tmp_path):
    import onnx
    from onnx import TensorProto

    half = fp16_onnx(onnx.load(str(onnx_file)))
    assert [i.type.tensor_type.elem_type for i in half.graph.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in half.graph.output] == [TensorProto.FLOAT]
    assert [i.name for i in half.graph.input] == ["image"] and [o.name for o in half.graph.output] == ["logits"]
    assert {i.data_type for i in half.graph.initializer} == {TensorProto.FLOAT16}
    assert half.graph.node[0].op_type == "Cast" and half.graph.node[-1].op_type == "Cast"
    path = tmp_path / "model_fp16.onnx"
    onnx.save(half, str(path))
    cpu = ["CPUExecutionProvider"]  # the same numbers in CI and on a GPU machine
    ref = Segmenter.load(onnx_file, input_size=None, providers=cpu)
    cand = Segmenter.load(path, input_size=None, providers=cpu)  # metadata kept: labels, stride
    assert cand.labels.names == FACES.names
    for batch in parity_images(ref.info):
        p = compare(ref, cand, batch)
        assert p.argmax_agreement >= 0.99, p
        x = np.stack([b.astype(np.float32) / 127.5 - 1 for b in batch]).transpose(0, 3, 1, 2)
        assert cand.backend.run(x).dtype == np.float32


def _resize_model(scales_from_shape: bool):
    """image -> Mul by a Constant(value_float) -> Resize by float32 scales (an initializer, or computed from the
    input's shape through a Cast to float) -> logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Constant", [], ["k"], value_float=0.5),
             helper.make_node("Mul", ["image", "k"], ["y"])]
    inits = [numpy_helper.from_array(np.array([], np.float32), "roi")]
    if scales_from_shape:
        nodes += [helper.make_node("Shape", ["image"], ["shp"]),
                  helper.make_node("Cast", ["shp"], ["shp_f"], to=TensorProto.FLOAT),
                  helper.make_node("Div", ["shp_f", "shp_f"], ["ones"]),
                  helper.make_node("Mul", ["ones", "two"], ["scales"])]
        inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "two"))
    else:
        inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"))
    nodes.append(helper.make_node("Resize", ["y", "roi", "scales"], ["logits"], mode="linear"))
    g = helper.make_graph(nodes, "resize", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 2, 4, 4])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 8, 8])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)  # onnxruntime reads <= 13
    onnx.checker.check_model(m, full_check=True)
    return m


@pytest.mark.parametrize("scales_from_shape", [False, True])
def test_fp16_onnx_keeps_float32_only_inputs(scales_from_shape):
    import onnxruntime as ort
    from onnx import TensorProto

    m = _resize_model(scales_from_shape)
    half = fp16_onnx(m)  # passes onnx.checker's full check inside
    kinds = {i.name: i.data_type for i in half.graph.initializer}
    assert kinds["roi"] == TensorProto.FLOAT
    if scales_from_shape:  # computed in fp16, cast back to float32 for Resize
        resize = next(n for n in half.graph.node if n.op_type == "Resize")
        cast = next(n for n in half.graph.node if n.output[0] == resize.input[2])
        assert cast.op_type == "Cast" and cast.attribute[0].i == TensorProto.FLOAT
    else:
        assert kinds["scales"] == TensorProto.FLOAT
    x = np.random.default_rng(0).uniform(-1, 1, (1, 2, 4, 4)).astype(np.float32)
    run = [ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
           for p in (m, half)]
    assert run[1].dtype == np.float32 and run[1].shape == (1, 2, 8, 8)
    np.testing.assert_allclose(run[1], run[0], atol=2e-3)


def test_fp16_onnx_refuses_values_beyond_float16():
    from onnx import numpy_helper

    m = _resize_model(False)
    m.graph.initializer.append(numpy_helper.from_array(np.array([1e6], np.float32), "huge"))
    m.graph.node[1].input[1] = "huge"
    with pytest.raises(ValueError, match="initializer 'huge' has values beyond the float16 range"):
        fp16_onnx(m)


# ---------------------------------------------------------------------------------------------------- TensorRT + GPU


@pytest.fixture(scope="module")
def trt_gpu():
    trt = pytest.importorskip(
        "tensorrt", reason="TensorRT is not installed: pip install 'partseg[tensorrt]' on a machine with an NVIDIA GPU")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT is installed but torch sees no CUDA GPU")
    return trt


PROFILE = {"min_shape": "1x3x32x32", "opt_shape": "2x3x64x64", "max_shape": "4x3x128x128"}


def test_engine_masks_match_onnxruntime(trt_gpu, onnx_file, tmp_path):
    from partseg.runtime.tensorrt_build import build_engine

    cache = tmp_path / "timing.cache"
    res = build_engine(onnx_file, tmp_path / "model.plan", timing_cache=cache, **PROFILE)
    assert res.path.is_file() and res.sidecar == tmp_path / "model.plan.json" and cache.stat().st_size > 0
    assert res.info.tensorrt_version == trt_gpu.__version__ and res.info.precision == "fp32"
    assert res.info.max_shape == (4, 3, 128, 128) and res.worst.argmax_agreement >= 0.999
    ref = Segmenter.load(onnx_file)
    eng = Segmenter.load(res.path)
    assert eng.backend.name == "tensorrt-fp32" and eng.labels.names == FACES.names
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(64, 64), (50, 90), (120, 33)] * 3]
    same = total = 0
    for a, b in zip(ref.predict(images), eng.predict(images), strict=True):
        same, total = same + int((a == b).sum()), total + a.size
    assert same / total >= 0.999
    x = rng.uniform(-1, 1, (9, 3, 64, 64)).astype(np.float32)  # batch 9 > engine max 4: runs in chunks
    np.testing.assert_allclose(eng.backend.run(x), ref.backend.run(x), atol=1e-2)
    with pytest.raises(ValueError, match="outside the engine's optimisation profile: height 256"):
        eng.backend.run(np.zeros((1, 3, 256, 64), np.float32))
    again = build_engine(onnx_file, tmp_path / "again.plan", timing_cache=cache, **PROFILE)  # reuses the cache
    assert again.worst.argmax_agreement >= 0.999


def test_fp16_engine_reports_parity(trt_gpu, onnx_file, tmp_path):
    from partseg.runtime.tensorrt_build import build_engine

    res = build_engine(onnx_file, tmp_path / "model16.plan", fp16=True, **PROFILE)
    expected = "builder flag" if hasattr(trt_gpu.BuilderFlag, "FP16") else "fp16 ONNX"
    assert res.info.precision == "fp16" and res.fp16_method == expected
    # a random-init UNet has small logit margins: full fp16 compute in torch agrees on 99.1-99.7 % of its pixels
    assert res.worst.argmax_agreement >= 0.98, res.worst
    eng = Segmenter.load(res.path)
    assert eng.backend.name == "tensorrt-fp16"
    out = eng.backend.run(np.zeros((2, 3, 64, 64), np.float32))
    assert out.dtype == np.float32 and out.shape == (2, len(FACES), 64, 64)


def test_parser_errors_are_reported(trt_gpu, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from partseg.runtime.tensorrt_build import build_engine

    bad = tmp_path / "bad.onnx"
    node = helper.make_node("NoSuchOp", ["image"], ["logits"], domain="partseg.test")
    g = helper.make_graph([node], "bad", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10, 8, 8])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("partseg.test", 1)],
                          ir_version=10)
    for k, v in ModelInfo(FACES, 8, 64).to_metadata().items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(bad))
    with pytest.raises(ValueError, match=r"ONNX parser rejected the model.*NoSuchOp"):
        build_engine(bad, tmp_path / "bad.plan", min_shape="1x3x8x8", opt_shape="1x3x8x8", max_shape="1x3x8x8")
    assert not (tmp_path / "bad.plan").exists()
