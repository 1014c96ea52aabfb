"""The served test model and the real server shared by the HTTP-service test modules (test_serve*.py): a tiny UNet
exported to ONNX, packaged into a temporary BentoML model store and served by the real `partseg serve start` on a
free loopback port. Session-scoped (registered in conftest.py): starting the server is the expensive part, so every
module uses the same one.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from partseg.distill.unet import UNet, UNetConfig, save_unet
from partseg.labels import FACES
from partseg.runtime.segmenter import Segmenter

ROOT = Path(__file__).resolve().parents[1]
MAX_PIXELS = 200_000  # the test server's pixel limit
MAX_UPLOAD_MB = 2  # its upload limit
MAX_QUEUE = 40  # its admission bound (over the 32 concurrent requests of test_serve.py)
MAX_BUFFERED_MB = 3  # request bodies it holds at once
SIZES = [(64, 64), (50, 70)]


# ------------------------------------------------------------------------------------------------ helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "OMP_NUM_THREADS": "1",
            "PARTSEG_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "partseg.cli", *args], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path

    def post(self, route: str, files=None, data=None, **kw) -> httpx.Response:
        return httpx.post(self.url + route, files=files, data=data, timeout=60, **kw)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def start(env: dict[str, str], log: Path, timeout: float = 60, command: list[str] | None = None,
          cwd: Path = ROOT) -> Server:
    """`partseg serve start` (or `command ... serve start`) on a free port, once /readyz answers 200."""
    port = free_port()
    out = open(log, "wb")
    command = command or [sys.executable, "-m", "partseg.cli"]
    proc = subprocess.Popen([*command, "serve", "start", "--port", str(port)], env=env,
                            cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            stop(server)
            pytest.fail(f"the server exited with {proc.returncode}:\n{server.logs()}")
        try:
            if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    stop(server)
    pytest.fail(f"the server was not ready within {timeout} s:\n{server.logs()}")


def stop(server: Server) -> None:
    """SIGTERM to `partseg serve start` (it forwards it to BentoML), then SIGKILL whatever is left of the process
    group this test started (new session: the group holds only the server's processes)."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(server.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.proc.wait(timeout=10)


def model_workers(root_pid: int) -> list[psutil.Process]:
    """The model-service (partseg-model) worker processes under the server process `root_pid`."""
    out = []
    for p in psutil.Process(root_pid).children(recursive=True):
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        if "--service-name" in cmd and cmd[cmd.index("--service-name") + 1] == "partseg-model":
            out.append(p)
    return out


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def sample_images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for h, w in SIZES:
        yy, xx = np.mgrid[:h, :w]
        ramp = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (h + w)], -1).astype(np.uint8)
        out += [rng.integers(0, 256, (h, w, 3), dtype=np.uint8), ramp]
    return out


def mask_of(resp: httpx.Response) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png"
    im = Image.open(io.BytesIO(resp.content))
    assert im.mode == "P" and im.getpalette()[:3 * len(FACES)] == FACES.palette()[:3 * len(FACES)]
    return np.asarray(im)


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int = 100_000) -> bytes:
    """A valid PNG header declaring side x side pixels (10^10): a few bytes claiming 30 GB of pixels."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + \
        chunk(b"IEND", b"")


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def serve_built(tmp_path_factory):
    """A tiny 10-class UNet (FACES labels, trained size 64) exported to ONNX and packaged into a fresh store."""
    from partseg.runtime.onnx_export import export_onnx

    tmp = tmp_path_factory.mktemp("serve")
    torch.manual_seed(0)
    model = UNet(UNetConfig(num_classes=10, channels=[8, 16, 32, 64]))
    with torch.no_grad():  # untrained UNets answer one class everywhere; spread the logits so masks vary
        model.head.weight.mul_(20)
        model.head.bias.normal_(0, 0.5)
    save_unet(model, tmp / "unet.safetensors", FACES, extra={"train_resolution": "64"})
    export_onnx(tmp / "unet.safetensors", tmp / "model.onnx")
    home = tmp / "bentoml"
    r = cli("serve", "package", str(tmp / "model.onnx"), "--name", "partseg-segmenter", env=server_env(home))
    assert "saved partseg-segmenter:" in r.stdout
    return tmp, home


@pytest.fixture(scope="session")
def serve_server(serve_built):
    tmp, home = serve_built
    s = start(server_env(home, PARTSEG_MAX_PIXELS=str(MAX_PIXELS), PARTSEG_MAX_BATCH_SIZE="16",
                    PARTSEG_MAX_UPLOAD_MB=str(MAX_UPLOAD_MB), PARTSEG_MAX_QUEUE=str(MAX_QUEUE),
                    PARTSEG_MAX_BUFFERED_MB=str(MAX_BUFFERED_MB)), tmp / "server.log")
    yield s
    stop(s)


@pytest.fixture(scope="session")
def serve_reference(serve_built) -> Segmenter:
    return Segmenter.load(serve_built[0] / "model.onnx")


