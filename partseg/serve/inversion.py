"""The GAN-inversion mode in its own worker process: one inversion at a time, killed when it runs past its timeout."""

from __future__ import annotations

import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from partseg.images import centre_box, centre_square, from_uint8
from partseg.labels import IGNORE


class InversionBusy(Exception):
    pass


class InversionTimeout(Exception):
    pass


class InversionFailed(Exception):
    pass


def _send(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    os.write(fd, struct.pack("<Q", len(data)))
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _recv(fd: int, deadline: float | None = None) -> Any:
    """One message from the pipe; TimeoutError when the deadline passes first, EOFError when the writer is gone."""

    def read(n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    raise TimeoutError
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)

    (n,) = struct.unpack("<Q", read(8))
    return pickle.loads(read(n))


def invert_image(G: Any, head: Any, image: np.ndarray, steps: int) -> tuple[np.ndarray, float]:
    """Segment one uint8 RGB image by GAN inversion: its centre square is resized to the generator's resolution
    and inverted, the head's labels are resized back (nearest); pixels outside the square are 255 (unlabelled)."""
    from partseg.fewshot.invert import InversionConfig
    from partseg.fewshot.segment import segment_by_inversion

    h, w = image.shape[:2]
    top, left, s = centre_box(h, w)
    r = G.resolution
    x = from_uint8(centre_square(image, r))[None]
    res = segment_by_inversion(G, head, x, InversionConfig(steps=steps), batch=1)
    lab = res["labels"][0].byte().numpy()
    if s != r:
        lab = np.asarray(Image.fromarray(lab, "L").resize((s, s), Image.NEAREST))
    mask = np.full((h, w), IGNORE, np.uint8)
    mask[top:top + s, left:left + s] = lab
    return mask, float(res["psnr"][0])


def inversion_worker_main(argv: Sequence[str] | None = None) -> None:
    """Child process: load generator + head once, then answer (image, steps) messages until the pipe closes."""
    gan, head, fd_in, fd_out, threads = argv if argv is not None else sys.argv[1:]
    fd_in, fd_out = int(fd_in), int(fd_out)
    try:
        import torch

        torch.set_num_threads(max(1, int(threads)))
        from partseg.fewshot.learner import FewShotHead
        from partseg.gan import load_generator

        G = load_generator(gan)
        h = FewShotHead.load(head, G)
    except Exception as e:  # noqa: BLE001 - report to the parent, which logs and refuses requests
        _send(fd_out, ("error", f"cannot load the inversion generator/head: {type(e).__name__}: {e}"))
        return
    _send(fd_out, ("ready", G.resolution))
    while True:
        try:
            image, steps = _recv(fd_in)
        except EOFError:
            return
        try:
            _send(fd_out, ("ok", invert_image(G, h, image, steps)))
        except Exception as e:  # noqa: BLE001
            _send(fd_out, ("error", f"{type(e).__name__}: {e}"))


class InversionRunner:
    """One inversion worker process, one request at a time; a request that runs past its timeout kills the worker
    (the next request starts a fresh one), so a slow inversion never holds the service."""

    def __init__(self, generator: str | os.PathLike, head: str | os.PathLike, threads: int = 1,
                 start_timeout: float = 300.0):
        self.generator, self.head, self.threads = str(generator), str(head), threads
        self.start_timeout = start_timeout
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._fds: tuple[int, int] | None = None
        self.resolution: int | None = None

    def start(self, timeout: float | None = None) -> None:
        with self._lock:
            self._ensure(time.monotonic() + (timeout or self.start_timeout))

    def _ensure(self, deadline: float) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._stop()
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        code = "import sys; from partseg.serve.inversion import inversion_worker_main; inversion_worker_main()"
        args = [sys.executable, "-c", code, self.generator, self.head, str(to_child_r), str(from_child_w),
                str(self.threads)]
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        self._proc = subprocess.Popen(args, pass_fds=(to_child_r, from_child_w), env=env, stdin=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._fds = (from_child_r, to_child_w)
        try:
            status, payload = _recv(from_child_r, deadline)
        except TimeoutError:
            self._stop()
            raise InversionTimeout("the inversion worker did not start in time") from None
        except EOFError:
            self._stop()
            raise InversionFailed("the inversion worker exited while starting") from None
        if status != "ready":
            self._stop()
            raise InversionFailed(payload)
        self.resolution = int(payload)

    def run(self, image: np.ndarray, steps: int, timeout: float) -> tuple[np.ndarray, float]:
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=timeout):
            raise InversionBusy(f"another inversion is running; none finished within {timeout:g} s")
        try:
            self._ensure(deadline)
            assert self._fds is not None
            _send(self._fds[1], (image, steps))
            try:
                status, payload = _recv(self._fds[0], deadline)
            except TimeoutError:
                self._stop()
                raise InversionTimeout(f"the inversion did not finish within {timeout:g} s ({steps} steps); lower "
                                       f"PARTSEG_INVERSION_STEPS or raise PARTSEG_INVERSION_TIMEOUT_S") from None
            except EOFError:
                self._stop()
                raise InversionFailed("the inversion worker exited unexpectedly") from None
            if status != "ok":
                raise InversionFailed(payload)
            return payload
        finally:
            self._lock.release()

    def _stop(self) -> None:
        if self._fds is not None:
            for fd in self._fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._fds = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None

    def close(self) -> None:
        with self._lock:
            self._stop()

