"""The prepared GPU check (benchmarks/gpu_check.sh + .py) on a machine without a GPU: it must say so clearly and
write that down, reject bad arguments, and its report writing and budget skips must work (CPU smoke run)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402

no_gpu = pytest.mark.skipif(torch.cuda.is_available() or shutil.which("nvidia-smi") is not None,
                            reason="this machine has an NVIDIA GPU: the no-GPU path cannot be exercised here")


@no_gpu
def test_script_without_gpu_says_so_and_writes_it(tmp_path) -> None:
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "out")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == gpu_check.NO_GPU_EXIT, r.stdout + r.stderr
    assert "no NVIDIA GPU found" in r.stdout and "Nothing measured" in r.stdout
    report = (tmp_path / "out" / "BENCHMARKS_gpu.md").read_text()
    assert report.startswith("# GPU check: not run on a GPU") and "nvidia-smi is not installed" in report
    assert not (tmp_path / "out" / "install.log").exists()  # nothing installed without a GPU


@pytest.mark.parametrize("argv, message", [
    (["--stages", "env,warp"], "unknown ['warp']"),
    (["--stages", ","], "empty list"),
    (["--budget", "0"], "--budget must be > 0"),
    (["--out", "report.txt"], "name it *.md"),
])
def test_bad_arguments_are_refused(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        gpu_check.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


@no_gpu
def test_cpu_smoke_run_writes_labelled_sections_and_raw_results(tmp_path) -> None:
    out = tmp_path / "r.md"
    assert gpu_check.main(["--smoke-cpu", "--stages", "env,trt", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# GPU check: CPU smoke run (tests the script; these are NOT GPU figures)")
    assert "<!-- gpu_env:start -->" in text and "## CPU smoke: Machine and peaks" in text
    assert "Peaks measured here: dense matmul fp32" in text
    assert "## CPU smoke: TensorRT FP16 engine: build and parity" in text and "needs an NVIDIA GPU" in text
    raw = json.loads(out.with_suffix(".json").read_text())
    assert raw["peaks"]["fp32_flops"] > 0 and raw["peaks"]["bytes_per_s"] > 0


@no_gpu
def test_stages_that_do_not_fit_the_budget_are_skipped_and_reported(tmp_path) -> None:
    out = tmp_path / "r.md"
    assert gpu_check.main(["--smoke-cpu", "--stages", "env,speed", "--budget", "0.5", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.count("Skipped:") == 2 and "of the 0.5 s budget left" in text
