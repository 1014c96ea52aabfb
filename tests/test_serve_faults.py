"""Issue #17, faults: the model-service worker of the running server is killed with SIGKILL; BentoML's process
supervisor starts a new one and the service answers again with the same masks. Meanwhile every answer is a 200
or a 503 with Retry-After, never a 500."""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from tests.serve_support import mask_of, model_workers, png, sample_images


def test_killed_model_worker_is_restarted(serve_server, serve_reference):
    img = sample_images()[3]
    files = {"image": ("x.png", png(img), "image/png")}
    assert serve_server.post("/predict", files=files).status_code == 200
    (worker,) = model_workers(serve_server.proc.pid)
    os.kill(worker.pid, signal.SIGKILL)
    t0 = time.monotonic()
    statuses = []
    while True:
        r = serve_server.post("/predict", files=files)
        statuses.append(r.status_code)
        assert r.status_code in (200, 503), r.text
        if r.status_code == 503:
            assert int(r.headers["retry-after"]) >= 1
        if r.status_code == 200:
            break
        assert time.monotonic() - t0 < 120, f"no answer 120 s after the kill: {statuses}"
        time.sleep(0.5)
    np.testing.assert_array_equal(mask_of(r), serve_reference.predict([img])[0])
    (new,) = model_workers(serve_server.proc.pid)
    assert new.pid != worker.pid
    print(f"answered again {time.monotonic() - t0:.1f} s after the kill; statuses meanwhile {statuses}")
