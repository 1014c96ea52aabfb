"""The installed wheel is the whole product: built from the sources, installed in a fresh virtual environment
outside the checkout, it packages a model and serves it over HTTP, with no top-level package but partseg."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.serve_support import ROOT, mask_of, png, sample_images, start, stop


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the package as it is in the working tree (the checkout stays untouched)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT / "partseg", src / "partseg", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / f, src / f)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
          str(src)])
    return next((tmp / "dist").glob("partseg-*.whl"))


def test_the_wheel_holds_only_partseg_and_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"partseg"}
    for needed in ("partseg/serve/service.py", "partseg/cli/__main__.py", "partseg/weights/faces64.safetensors",
                   "partseg/weights/faces128.safetensors", "partseg/weights/oracle_faces128_aligned.safetensors",
                   "partseg/weights/oracle_faces64.safetensors", "partseg/labeller/static/index.html",
                   "partseg/runtime/tensorrt_build.py"):
        assert needed in names, f"{needed} missing from {wheel.name}"


def test_the_installed_wheel_packages_and_serves_a_model(wheel, serve_built, tmp_path):
    """Fresh venv (system site-packages give it torch, bentoml, ...; partseg itself comes from the wheel only),
    run from a folder outside the checkout: `partseg export onnx`, `partseg serve package`, `partseg serve start`,
    /readyz, /predict."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)])
    py, exe = venv / "bin" / "python", venv / "bin" / "partseg"
    _run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)])
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(BENTOML_HOME=str(tmp_path / "bentoml"), BENTOML_DO_NOT_TRACK="true", OMP_NUM_THREADS="1",
               PARTSEG_THREADS="1")
    found = _run([str(py), "-c", "import partseg; print(partseg.__file__)"], cwd=away, env=env).stdout.strip()
    assert Path(found).is_relative_to(venv), f"partseg imported from {found}, not from the wheel in {venv}"
    r = subprocess.run([str(py), "-c", "import export"], cwd=away, env=env, capture_output=True, text=True)
    assert r.returncode != 0, "a top-level package 'export' is importable from the venv"
    model = away / "model.onnx"
    _run([str(exe), "export", "onnx", str(serve_built[0] / "unet.safetensors"), "--out", str(model)], cwd=away, env=env)
    r = _run([str(exe), "serve", "package", str(model), "--name", "partseg-segmenter"], cwd=away, env=env)
    assert "saved partseg-segmenter:" in r.stdout
    server = start(env, tmp_path / "server.log", command=[str(exe)], cwd=away)
    try:
        img = sample_images()[0]
        resp = server.post("/predict", files={"image": ("a.png", png(img), "image/png")})
        assert resp.status_code == 200, resp.text
        mask = mask_of(resp)
        assert mask.shape == img.shape[:2] and len(np.unique(mask)) > 1
    finally:
        stop(server)
