"""The HTTP service end to end: a tiny UNet exported to ONNX, packaged into a temporary BentoML model store and
served by the real `partseg serve start` (BentoML) on a free loopback port; no mocks.

Masks over HTTP equal Segmenter.load(onnx).predict; every kind of bad upload is a 4xx with a message and the
server keeps answering; 32 concurrent requests all succeed and are batched; `bentoml build` works; the GAN
inversion mode is a 404 when off and answers when on. The library parts (COCO RLE, config, upload checks) are
tested without a server.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from partseg import serve as serving
from partseg.data.annotations import decode_coco_rle
from partseg.labels import FACES
from partseg.runtime.segmenter import Segmenter
from tests.serve_support import (
    MAX_PIXELS,
    ROOT,
    bomb_png,
    cli,
    mask_of,
    model_workers,
    png,
    sample_images,
    server_env,
    start,
    stop,
)

# ------------------------------------------------------------------------------------------------ the serve_server


def test_masks_equal_the_runtime(serve_server, serve_reference):
    images = sample_images()
    expected = serve_reference.predict(images)
    for img, exp in zip(images, expected, strict=True):
        got = mask_of(serve_server.post("/predict", files={"image": ("x.png", png(img), "image/png")}))
        assert got.shape == img.shape[:2]
        np.testing.assert_array_equal(got, exp)
    assert any(len(np.unique(m)) > 1 for m in expected)  # the comparison is not vacuous


def test_predict_json_counts_and_rle(serve_server, serve_reference):
    img = sample_images()[3]  # 50 x 70
    mask = serve_reference.predict([img])[0]
    r = serve_server.post("/predict_json", files={"image": ("x.png", png(img), "image/png")}, data={"rle": "true"})
    assert r.status_code == 200, r.text
    d = r.json()
    assert (d["width"], d["height"]) == (70, 50)
    assert d["backend"] == "onnxruntime-cpu" and d["model"].startswith("partseg-segmenter:")
    assert [c["name"] for c in d["classes"]] == list(FACES.names)
    assert sum(c["pixels"] for c in d["classes"]) == 50 * 70
    for c in d["classes"]:
        assert c["pixels"] == int((mask == c["index"]).sum())
        assert c["fraction"] == pytest.approx(c["pixels"] / (50 * 70), abs=1e-6)
        assert c["rle"]["size"] == [50, 70]
        np.testing.assert_array_equal(decode_coco_rle(c["rle"]["counts"], 50, 70), mask == c["index"])
    plain = serve_server.post("/predict_json", files={"image": ("x.png", png(img), "image/png")}).json()
    assert all(c["rle"] is None for c in plain["classes"]) and plain["rle_format"] is None


def test_overlay(serve_server, serve_reference):
    img = sample_images()[0]
    r = serve_server.post("/overlay", files={"image": ("x.png", png(img), "image/png")}, data={"alpha": "0.3"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
    got = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    np.testing.assert_array_equal(got, FACES.overlay(img, serve_reference.predict([img])[0], alpha=0.3))


def _truncated() -> bytes:
    return png(sample_images()[0])[:300]


BAD = {  # name: (multipart files, form data, expected status, words in the message)
    "not an image": ({"image": ("x.png", b"hello, I am text", "image/png")}, None, 400, "not an image"),
    "truncated": ({"image": ("x.png", _truncated(), "image/png")}, None, 400, "truncated"),
    "empty": ({"image": ("x.png", b"", "image/png")}, None, 400, "empty"),
    "over the pixel limit": ({"image": ("x.png", png(np.zeros((500, 500, 3), np.uint8)), "image/png")}, None, 413,
                             "limit"),
    "decompression bomb": ({"image": ("x.png", bomb_png(), "image/png")}, None, 413, "pixels"),
    "wrong content type": ({"image": ("x.txt", png(np.zeros((8, 8, 3), np.uint8)), "text/plain")}, None, 415,
                           "content type"),
    "url instead of a file": (None, {"image": "http://10.1.2.3/face.png"}, 400, "uploaded file"),
    "no image field": (None, {"alpha": "0.5"}, 400, "image"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_4xx_and_the_server_keeps_serving(serve_server, case):
    files, data, status, words = BAD[case]
    r = serve_server.post("/predict", files=files, data=data)
    assert r.status_code == status, r.text
    assert words in r.text
    ok = serve_server.post("/predict", files={"image": ("x.png", png(sample_images()[0]), "image/png")})
    assert ok.status_code == 200


def test_octet_stream_uploads_are_sniffed(serve_server):
    r = serve_server.post("/predict", files={"image": ("x.bin", png(sample_images()[1]), "application/octet-stream")})
    assert r.status_code == 200


def test_inversion_is_a_404_when_disabled(serve_server):
    r = serve_server.post("/predict_inversion", files={"image": ("x.png", png(sample_images()[0]), "image/png")})
    assert r.status_code == 404 and "disabled" in r.json()["error"]


@pytest.fixture
def fresh_server(serve_built):
    """A server of its own: BentoML's batch dispatcher learns from the traffic it has seen, and after the other
    tests' one-at-a-time requests it stopped waiting for batch mates (a whole module run failed this way)."""
    tmp, home = serve_built
    s = start(server_env(home, PARTSEG_MAX_BATCH_SIZE="16"), tmp / "server-batching.log")
    yield s
    stop(s)


def test_concurrent_requests_are_batched(fresh_server, serve_reference):
    serve_server = fresh_server
    images = sample_images()
    expected = serve_reference.predict(images)
    bodies = [png(im) for im in images]
    # each wave's 32 requests leave together: without the barrier a quiet, fast machine can answer each request
    # before the next one arrives, and then nothing is there to batch (seen once in CI)
    wave = threading.Barrier(32, timeout=60)

    def one(i: int) -> tuple[int, np.ndarray]:
        k = i % len(images)
        wave.wait()
        return k, mask_of(serve_server.post("/predict", files={"image": ("x.png", bodies[k], "image/png")}))

    # Even with the barrier, a fast idle machine answered every request of four waves alone once (1 CI run in 4):
    # probably the front decoded them no faster than the model answered. So the first wave arrives while the model
    # worker is stopped (SIGSTOP): its requests must queue, and the batcher must serve them together once it resumes.
    (worker,) = model_workers(serve_server.proc.pid)
    with ThreadPoolExecutor(32) as pool:  # 4 waves of 32: past BentoML's 100-request client-pool refresh too
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            stalled = [pool.submit(one, i) for i in range(32)]
            time.sleep(2.0)  # the front receives, decodes and queues them meanwhile
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        results = [f.result() for f in stalled] + list(pool.map(one, range(32, 4 * 32)))
    assert len(results) == 4 * 32
    for k, mask in results:  # batch mates of other sizes do not change a mask
        np.testing.assert_array_equal(mask, expected[k])
    metrics = httpx.get(serve_server.url + "/metrics", timeout=10).text
    for name in (serving.BENTOML_BATCH_METRIC, serving.BATCH_METRIC):
        counts = serving.histogram_counts(metrics, name)
        assert counts, f"{name} missing from /metrics"
        assert counts[float("inf")] > counts[1.0], f"{name}: no batch larger than 1: {counts}"


def test_health_info_and_openapi(serve_server):
    for route in ("/readyz", "/livez"):
        assert httpx.get(serve_server.url + route, timeout=10).status_code == 200
    info = serve_server.post("/info", json={}).json()
    assert info["backend"] == "onnxruntime-cpu" and info["config"]["max_pixels"] == MAX_PIXELS
    assert [c["name"] for c in info["classes"]] == list(FACES.names) and info["inversion"] is False
    spec = httpx.get(serve_server.url + "/docs.json", timeout=10).json()
    for route in ("/predict", "/predict_json", "/overlay", "/predict_inversion"):
        post = spec["paths"][route]["post"]
        body = post["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert body["properties"]["image"]["format"] == "binary" and body["required"] == ["image"]
    assert "image/png" in spec["paths"]["/predict"]["post"]["responses"]["200"]["content"]
    out = spec["paths"]["/predict_json"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert "pixels" in str(spec["components"]) and out


def test_bentoml_build(serve_built):
    tmp, home = serve_built
    r = subprocess.run([sys.executable, "-m", "bentoml", "build"], cwd=ROOT, env=server_env(home), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    bento = next((home / "bentos" / "partseg").glob("*/bento.yaml"))
    text = bento.read_text()
    assert "partseg-segmenter:" in text and "partseg-model" in text
    assert (bento.parent / "src" / "serve" / "service.py").is_file()
    assert (bento.parent / "src" / "partseg" / "serve" / "guard.py").is_file()
    assert (bento.parent / "src" / "partseg" / "serve" / "service.py").is_file()


# ------------------------------------------------------------------------------------------------ inversion


@pytest.fixture(scope="module")
def inversion_kit(serve_built, tmp_path_factory):
    """A tiny 32 px generator and an MLP head with the FACES classes trained for a few steps on its samples."""
    from partseg.data.dataset import write_sample_set
    from partseg.fewshot.learner import FewShotConfig, load_shots, train_head
    from partseg.gan import Generator, save_generator
    from partseg.gan.sampling import sample
    from tests.conftest import tiny_config

    tmp = tmp_path_factory.mktemp("inversion")
    torch.manual_seed(0)
    G = Generator(tiny_config()).eval()
    s = sample(G, 2, seed=0)
    masks = (s.images.mean(1).add(1).mul(5).clamp(0, 9)).byte().numpy()  # brightness bands as 10 "classes"
    write_sample_set(tmp / "shots", s, FACES, masks=masks)
    head = train_head(G, load_shots(tmp / "shots"), FewShotConfig(head="mlp", steps=5), progress=False)
    save_generator(G, tmp / "G.safetensors")
    head.save(tmp / "head.safetensors")
    return tmp / "G.safetensors", tmp / "head.safetensors"


def test_inversion_runner_times_out_then_recovers(inversion_kit):
    gan, head = inversion_kit
    runner = serving.InversionRunner(gan, head, threads=1)
    try:
        runner.start(timeout=60)
        img = sample_images()[3]
        t0 = time.monotonic()
        with pytest.raises(serving.InversionTimeout):
            runner.run(img, steps=10**7, timeout=1.0)
        assert time.monotonic() - t0 < 5
        mask, psnr = runner.run(img, steps=2, timeout=60)  # a fresh worker
        assert mask.shape == (50, 70) and np.isfinite(psnr)
        assert (mask[:, :10] == 255).all() and (mask[:, 10:60] < 10).all()  # centre 50 x 50 square only
    finally:
        runner.close()


def test_inversion_endpoint_when_enabled(serve_built, inversion_kit):
    tmp, home = serve_built
    gan, head = inversion_kit
    cli("serve", "package", str(tmp / "model.onnx"), "--name", "partseg-inv", "--gan", str(gan), "--head",
         str(head), env=server_env(home))
    s = start(server_env(home, PARTSEG_MODEL="partseg-inv", PARTSEG_INVERSION="1", PARTSEG_INVERSION_STEPS="3",
                    PARTSEG_MAX_BATCH_SIZE="1"), tmp / "inversion-serve_server.log")
    try:
        img = sample_images()[2]  # 50 x 70
        r = s.post("/predict_inversion", files={"image": ("x.png", png(img), "image/png")})
        mask = mask_of(r)
        assert mask.shape == (50, 70) and (mask[:, :10] == 255).all() and (mask[:, 10:60] < 10).all()
        assert float(r.headers["x-inversion-psnr-db"]) > 0 and r.headers["x-inversion-steps"] == "3"
        bad = s.post("/predict_inversion", files={"image": ("x.png", b"nope", "image/png")})
        assert bad.status_code == 400
        assert s.post("/predict", files={"image": ("x.png", png(img), "image/png")}).status_code == 200
        assert s.post("/info", json={}).json()["inversion"] is True
    finally:
        stop(s)


# ------------------------------------------------------------------------------------------------ library


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (50, 70), (0, 4)])
def test_coco_rle_round_trips(shape):
    rng = np.random.default_rng(1)
    cases = [np.zeros(shape, bool), np.ones(shape, bool), rng.random(shape) < 0.5]
    if shape == (50, 70):
        yy, xx = np.mgrid[:50, :70]
        cases.append((yy - 25) ** 2 + (xx - 35) ** 2 < 300)  # long runs: multi-character and negative deltas
    for bits in cases:
        rle = serving.encode_coco_rle(bits)
        assert rle["size"] == list(shape)
        np.testing.assert_array_equal(decode_coco_rle(rle["counts"], *shape), bits)


def test_coco_rle_matches_pycocotools_on_a_known_mask():
    bits = np.zeros((4, 3), bool)
    bits[1:3, 1] = True  # column-major runs: 5 zeros, 2 ones, 5 zeros
    assert serving.encode_coco_rle(bits)["counts"] == "525"


def test_config_from_env_and_toml(tmp_path):
    cfg = serving.ServeConfig.from_env({"PARTSEG_MAX_BATCH_SIZE": "1", "PARTSEG_INVERSION": "yes"})
    assert not cfg.batching and cfg.inversion and cfg.model_tag == "partseg-segmenter:latest"
    (tmp_path / "c.toml").write_text('[partseg]\nmodel = "m:v1"\nmax_latency_ms = 500\ninversion_timeout_s = 9\n')
    cfg = serving.ServeConfig.from_env({"PARTSEG_SERVE_CONFIG": str(tmp_path / "c.toml"),
                                        "PARTSEG_MAX_LATENCY_MS": "700"})
    assert (cfg.model_tag, cfg.max_latency_ms, cfg.inversion_timeout_s) == ("m:v1", 700, 9.0)
    with pytest.raises(ValueError, match="MAX_BATCH_SIZE"):
        serving.ServeConfig.from_env({"PARTSEG_MAX_BATCH_SIZE": "many"})
    (tmp_path / "bad.toml").write_text("max_bach_size = 3\n")
    with pytest.raises(ValueError, match="unknown settings"):
        serving.ServeConfig.from_env({"PARTSEG_SERVE_CONFIG": str(tmp_path / "bad.toml")})


def test_bundle_backend_order_and_fallback(serve_built, tmp_path):
    tmp, _ = serve_built
    bundle = serving.stage_bundle([tmp / "unet.safetensors", tmp / "model.onnx"], tmp_path / "b")
    assert [a.kind for a in bundle.artefacts] == ["onnxruntime", "torch"] and bundle.labels == FACES
    cfg = serving.ServeConfig(threads=1)
    assert serving.load_segmenter(bundle, cfg, gpu=False).backend == "onnxruntime-cpu"
    torch_only = serving.ServeConfig(backend="torch")
    assert serving.load_segmenter(bundle, torch_only, gpu=False).backend.startswith("torch-cpu")
    (tmp_path / "b" / "model.onnx").write_bytes(b"broken")  # a file that no longer loads: the next one serves
    loaded = serving.load_segmenter(serving.Bundle.open(tmp_path / "b"), cfg, gpu=False)
    assert loaded.backend.startswith("torch-cpu") and "model.onnx" in loaded.skipped[0]
    img = sample_images()[3]
    ref = Segmenter.load(tmp / "model.onnx").predict([img])[0]
    assert (loaded.segmenter.predict([img])[0] == ref).mean() > 0.999
    with pytest.raises(ValueError, match="only"):
        serving.load_segmenter(bundle, serving.ServeConfig(backend="tensorrt"), gpu=False)
    with pytest.raises(ValueError, match="unknown model file type"):
        serving.stage_bundle([tmp / "serve_server.log"], tmp_path / "c")
    with pytest.raises(ValueError, match="both"):
        serving.stage_bundle([tmp / "model.onnx"], tmp_path / "d", gan="builtin:faces64")


def test_a_tensorrt_engine_is_packaged_with_its_sidecar_and_skipped_without_a_gpu(serve_built, tmp_path):
    from partseg.runtime.segmenter import read_onnx_info
    from partseg.runtime.tensorrt import EngineInfo, write_engine_info

    tmp, _ = serve_built
    plan = tmp_path / "faces.plan"
    plan.write_bytes(b"not really an engine")  # never loaded here: no GPU
    write_engine_info(plan, EngineInfo(read_onnx_info(tmp / "model.onnx"), "10.0", "test GPU", (1, 3, 8, 8),
                                       (4, 3, 64, 64), (16, 3, 512, 512), "fp16", plan.stat().st_size))
    bundle = serving.stage_bundle([tmp / "model.onnx", plan], tmp_path / "b")
    assert [(a.kind, a.file, a.extra) for a in bundle.artefacts] == [
        ("tensorrt", "model.plan", ["model.plan.json"]), ("onnxruntime", "model.onnx", [])]
    loaded = serving.load_segmenter(bundle, serving.ServeConfig(threads=1), gpu=False)
    assert loaded.backend == "onnxruntime-cpu" and "TensorRT needs a GPU" in loaded.skipped[0]


def test_decode_image_limits_and_formats():
    img = sample_images()[1]
    np.testing.assert_array_equal(serving.decode_image(png(img), 10**6), img)
    rgba = io.BytesIO()
    Image.fromarray(np.dstack([img, np.full(img.shape[:2], 7, np.uint8)])).save(rgba, format="PNG")
    np.testing.assert_array_equal(serving.decode_image(rgba.getvalue(), 10**6), img)
    with pytest.raises(serving.TooLarge):
        serving.decode_image(png(img), 64 * 64 - 1)
    with pytest.raises(serving.TooLarge):
        serving.decode_image(png(img), 10**6, max_bytes=10)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
    with pytest.raises(serving.RequestError, match="not an image"):
        serving.decode_image(eps, 10**6)  # formats Pillow would hand to Ghostscript are never opened
    serving.check_content_type("image/jpeg; charset=binary")
    with pytest.raises(serving.UnsupportedType):
        serving.check_content_type("application/pdf")
