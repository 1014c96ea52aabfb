"""The inference runtime and ONNX export: round trip with dynamic batch and size, metadata, parity limits, the
same masks from PyTorch and onnxruntime, and clear errors for bad model files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from partseg.cli import app
from partseg.data.dataset import read_image, read_mask, write_image
from partseg.data.faces import render_face
from partseg.distill.unet import fold_batchnorm
from partseg.labels import FACES
from partseg.runtime.onnx_export import export_onnx
from partseg.runtime.segmenter import ModelInfo, Segmenter, TorchBackend, compare, read_onnx_info


@pytest.fixture(scope="module")
def onnx_file(unet_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    res = export_onnx(unet_file, out)
    assert all(p.argmax_agreement >= 0.999 and p.max_abs_logit < 1e-3 for p in res.parity)
    return out


def faces(n: int, h: int, w: int, seed0: int = 123) -> list[np.ndarray]:
    return [render_face(seed0 + i, max(h, w))[0][:h, :w] for i in range(n)]


def test_fold_batchnorm_keeps_outputs(unet_file):
    from partseg.distill.unet import load_unet

    model, _ = load_unet(unet_file)
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        a, b = model(x), fold_batchnorm(model)(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fold_batchnorm(model).modules())
    assert (a - b).abs().max() < 1e-4


def test_onnx_metadata_reads_back(onnx_file, unet_file):
    info = read_onnx_info(onnx_file)
    assert info.labels == FACES
    assert info.stride == 8 and info.input_size == 64
    assert info.source == unet_file.name


@pytest.mark.parametrize(("n", "h", "w"), [(1, 64, 64), (3, 48, 80)])
def test_onnx_dynamic_batch_and_size_match_torch(onnx_file, unet_file, n, h, w):
    import onnxruntime as ort

    from partseg.distill.unet import load_unet

    model, _ = load_unet(unet_file)
    x = torch.rand(n, 3, h, w) * 2 - 1
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = model(x).numpy()
    assert y.shape == (n, len(FACES), h, w)
    assert np.abs(y - ref).max() < 1e-4


@pytest.mark.parametrize("input_size", ["model", None])
def test_torch_and_onnxruntime_give_identical_masks(onnx_file, unet_file, input_size):
    images = faces(3, 64, 64) + faces(2, 50, 70, seed0=200) + faces(1, 129, 97, seed0=300)
    ref = Segmenter.load(unet_file, input_size=input_size)
    ort_seg = Segmenter.load(onnx_file, input_size=input_size)
    assert ref.backend.name == "torch-cpu-channels_last" and ort_seg.backend.name == "onnxruntime-cpu"
    masks_t, masks_o = ref.predict(images), ort_seg.predict(images)
    for im, a, b in zip(images, masks_t, masks_o, strict=True):
        assert a.shape == b.shape == im.shape[:2] and a.dtype == np.uint8
        assert (a == b).mean() >= 0.999
    parity = compare(ref, ort_seg, images)
    assert parity.argmax_agreement >= 0.999 and parity.max_abs_logit < 1e-3


def test_mask_does_not_depend_on_batch_mates(unet_file):
    seg = Segmenter.load(unet_file, input_size=None, max_batch=4)
    a, b, c = faces(1, 64, 64)[0], faces(1, 64, 64, seed0=7)[0], faces(1, 40, 100, seed0=9)[0]
    alone = seg.logits([a])[0]
    together = seg.logits([c, b, a, b, b, b])[2]  # a shares a padded batch with other images, c is grouped apart
    assert torch.allclose(alone, together, atol=1e-5)


def test_probabilities_sum_to_one_and_match_masks(unet_file):
    seg = Segmenter.load(unet_file)
    masks, probs = seg.predict(faces(2, 37, 90), return_probs=True)
    for m, p in zip(masks, probs, strict=True):
        assert p.shape == (len(FACES), 37, 90)
        assert np.allclose(p.sum(0), 1, atol=1e-5)
        assert (p.argmax(0) == m).all()


def test_export_refuses_when_parity_fails_and_writes_nothing(unet_file, tmp_path):
    out = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError, match="parity"):
        export_onnx(unet_file, out, max_logit=-1.0)  # an impossible limit: the check must be able to fail
    assert not out.exists() and not list(tmp_path.iterdir())


def test_bad_model_files_get_clear_errors(tmp_path, onnx_file):
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        Segmenter.load(tmp_path / "missing.onnx")
    txt = tmp_path / "model.txt"
    txt.write_text("hello")
    with pytest.raises(ValueError, match="unknown model file type"):
        Segmenter.load(txt)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01not a protobuf" * 10)
    with pytest.raises(ValueError, match="garbage.onnx"):
        Segmenter.load(garbage)
    with pytest.raises(ValueError, match="runs on the onnxruntime backend"):
        Segmenter.load(onnx_file, backend="torch")
    # an ONNX model without partseg metadata
    import onnx

    proto = onnx.load(str(onnx_file))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ValueError, match="no partseg metadata"):
        Segmenter.load(bare)


def test_bad_images_get_clear_errors(unet_file):
    seg = Segmenter.load(unet_file)
    with pytest.raises(ValueError, match="image 1: expected a uint8 RGB"):
        seg.predict([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)])
    with pytest.raises(ValueError, match="image 0: expected a uint8 RGB"):
        seg.predict([np.zeros((8, 8, 3), np.float32)])


def test_model_info_metadata_round_trip_and_checks():
    info = ModelInfo(FACES, stride=16, input_size=None, source="x")
    back = ModelInfo.from_metadata(info.to_metadata(), "here")
    assert back == info
    meta = info.to_metadata() | {"normalisation": "x / 255"}
    with pytest.raises(ValueError, match="normalisation"):
        ModelInfo.from_metadata(meta, "here")


def test_cli_export_then_predict_any_size(unet_file, tmp_path):
    runner = CliRunner()
    onnx_path = tmp_path / "m.onnx"
    r = runner.invoke(app, ["export", "onnx", str(unet_file), "--out", str(onnx_path)])
    assert r.exit_code == 0, r.output
    assert "argmax agreement 100" in r.output or "argmax agreement 99.9" in r.output
    imgs = tmp_path / "imgs"
    shapes = {"a": (64, 64), "b": (45, 77), "c": (130, 100)}
    for i, (name, (h, w)) in enumerate(shapes.items()):
        write_image(imgs / f"{name}.png", faces(1, h, w, seed0=500 + i)[0])
    out = tmp_path / "pred"
    r = runner.invoke(app, ["predict", str(imgs), "--unet", str(onnx_path), "--out", str(out), "--batch", "2"])
    assert r.exit_code == 0, r.output
    ref = Segmenter.load(unet_file)
    for name, (h, w) in shapes.items():
        mask = read_mask(out / "labels" / f"{name}.png", FACES)
        assert mask.shape == (h, w)
        assert (mask == ref.predict([read_image(imgs / f"{name}.png")])[0]).mean() >= 0.999
        assert (out / "overlays" / f"{name}.png").is_file()
    r = runner.invoke(app, ["predict", str(imgs), "--mode", "unet", "--out", str(out)])
    assert r.exit_code != 0 and "needs --unet" in r.output


def test_torch_backend_reports_its_configuration(unet_file):
    from partseg.distill.unet import load_unet

    model, _ = load_unet(unet_file)
    assert TorchBackend(model).name == "torch-cpu"
    assert TorchBackend(model, channels_last=True).name == "torch-cpu-channels_last"
