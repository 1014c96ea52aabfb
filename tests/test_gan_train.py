"""GAN training: finite losses, exact resume (also after kill -9), settings checks, DDP with 2 gloo processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from partseg.gan import load_generator
from partseg.gan.data import ImageFolder, InfiniteSampler
from partseg.gan.train import TrainConfig, adam_for, train

TINY = dict(resolution=32, batch=4, z_dim=32, w_dim=32, channel_base=512, channel_max=32, workers=0, log_steps=2)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """A dozen random images of assorted sizes and formats (training must crop and resize them)."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(12):
        arr = (rng.random((30 + 3 * i, 48, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(root / f"im{i}.{'png' if i % 2 else 'jpg'}")
    (root / "notes.txt").write_text("not an image")
    return root


def _cfg(images: Path, **kw) -> TrainConfig:
    return TrainConfig(data=str(images), **{**TINY, **kw})


def _log(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]


def test_dataset_crops_resizes_and_mirrors(images):
    ds = ImageFolder(images, 32, mirror=True)
    assert len(ds) == 24
    x = ds[0]
    assert x.shape == (3, 32, 32) and -1 <= x.min() and x.max() <= 1
    assert torch.equal(ds[12], x.flip(-1))


def test_dataset_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        ImageFolder(tmp_path / "nope", 32)
    with pytest.raises(ValueError, match="no images found"):
        ImageFolder(tmp_path, 32)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot decode training image .*bad\.png"):
        ImageFolder(tmp_path, 32)[0]


def test_partseg_dataset_folder_trains_on_images_only(tmp_path):
    from partseg.data.dataset import write_synth_dataset

    write_synth_dataset(tmp_path, 3, size=32, workers=1, progress=False)
    assert len(ImageFolder(tmp_path, 32, mirror=False)) == 3  # masks/ is not read as training images


def test_sampler_splits_ranks_and_resumes():
    def take(s, k):
        it = iter(s)
        return [next(it) for _ in range(k)]

    full = take(InfiniteSampler(10, seed=3), 25)
    assert sorted(full[:10]) == list(range(10))  # each epoch a permutation
    r0, r1 = take(InfiniteSampler(10, 3, rank=0, world=2), 12), take(InfiniteSampler(10, 3, rank=1, world=2), 12)
    assert r0 == full[0:24:2] and r1 == full[1:25:2]
    assert take(InfiniteSampler(10, seed=3, start=7), 18) == full[7:25]


def test_lazy_regularisation_adam_correction(images):
    cfg = _cfg(images, lr=0.002, beta2=0.99)
    opt = adam_for([torch.nn.Parameter(torch.zeros(1))], cfg, reg_every=16)
    c = 16 / 17
    assert opt.param_groups[0]["lr"] == pytest.approx(0.002 * c)
    assert opt.param_groups[0]["betas"] == pytest.approx((0.0, 0.99**c))


def test_short_run_finite_and_resume_is_exact(images, tmp_path):
    cfg = _cfg(images, kimg=0.032, ckpt_kimg=0.016)  # 8 steps; PL at 0 and 4, R1 at 0
    a = train(cfg, tmp_path / "a", progress=False)
    assert a["step"] == 8 and not a["stopped_early"]
    log = _log(tmp_path / "a")
    assert [r["step"] for r in log] == [2, 4, 6, 8]
    keys = {"loss_G", "loss_D", "pl_penalty", "r1_penalty"}
    assert keys <= set().union(*log)
    assert all(np.isfinite(v) for r in log for k, v in r.items() if k in keys)
    assert sorted(p.name for p in (tmp_path / "a").glob("grid-step*.png")) == ["grid-step0000004.png",
                                                                               "grid-step0000008.png"]
    # the checkpoint loads with weights_only and resumes to the same step: nothing more to do
    ckpt = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 8
    again = train(cfg, tmp_path / "a", progress=False)
    assert again["resumed"] and again["start_step"] == 8 and again["step"] == 8

    # interrupted after 3 steps, then resumed: bit-identical to the uninterrupted run
    b = train(cfg, tmp_path / "b", stop_at_step=3, progress=False)
    assert b["stopped_early"] and torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 3
    b = train(cfg, tmp_path / "b", progress=False)
    assert b["start_step"] == 3 and b["step"] == 8
    cb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    for net in ("G", "D", "G_ema"):
        for k, v in ckpt[net].items():
            assert torch.equal(v, cb[net][k]), f"{net}.{k} differs after resume"

    # the exported generator is G_ema and loads through the public loader
    G = load_generator(tmp_path / "a" / "generator.safetensors")
    G_run = load_generator(tmp_path / "a")
    z = torch.randn(2, G.z_dim)
    assert torch.equal(G(z), G_run(z))


def test_resume_refuses_other_settings(images, tmp_path):
    train(_cfg(images, kimg=0.008), tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"different settings \(resolution: run has 32, asked for 64"):
        train(_cfg(images, kimg=0.008, resolution=64), tmp_path, progress=False)
    # a longer schedule is a resumable change
    assert train(_cfg(images, kimg=0.016), tmp_path, progress=False)["step"] == 4


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "partseg.cli", *args]


TINY_ARGS = ["--resolution", "32", "--batch", "4", "--z-dim", "32", "--w-dim", "32", "--channel-base", "512",
             "--channel-max", "32", "--workers", "0"]


def test_kill_9_then_resume(images, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(_cli("gan", "train", str(images), "--out", str(run), "--kimg", "100", "--ckpt-kimg", "0.008",
                              *TINY_ARGS), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if (run / "checkpoint.pt").exists() and torch.load(run / "checkpoint.pt", weights_only=True)["step"] >= 4:
                break
            time.sleep(0.2)
        else:
            pytest.fail("training wrote no checkpoint within 120 s")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    step = torch.load(run / "checkpoint.pt", weights_only=True)["step"]  # survived kill -9 intact
    assert step >= 4
    target = (step + 2) * 4 / 1000
    res = subprocess.run(_cli("gan", "train", str(images), "--out", str(run), "--kimg", str(target),
                              "--ckpt-kimg", "0.008", *TINY_ARGS), env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"resuming {run} at step {step}" in res.stdout + res.stderr
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == step + 2
    assert all(r["step"] <= step + 2 for r in _log(run))
    assert not list(run.glob(".*.tmp"))  # leftovers of the killed write are cleaned up


def test_ddp_two_gloo_processes_stay_in_sync(images, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                          "2", "-m", "partseg.cli", "gan", "train", str(images), "--out", str(run), "--kimg", "0.016",
                          "--ckpt-kimg", "0.008", *TINY_ARGS], env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "on 2 process(es)" in res.stdout + res.stderr
    syncs = [r for r in _log(run) if r.get("event") == "ddp_sync"]
    assert [r["step"] for r in syncs] == [2, 4] and all(r["world"] == 2 and r["max_param_diff"] == 0 for r in syncs)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 4


@pytest.mark.parametrize("amp", ["bf16", "off"])
def test_precision_modes_train_finite_resume_exactly_and_are_logged(images, tmp_path, amp):
    """bf16 autocast on CPU (the `auto` choice on CPUs with bf16 units) and float32 both train and resume
    bit-exactly; every log record says which precision ran."""
    cfg = _cfg(images, kimg=0.016, ckpt_kimg=0.016, amp=amp)  # 4 steps
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", stop_at_step=2, progress=False)
    train(cfg, tmp_path / "b", progress=False)
    a, b = (torch.load(tmp_path / r / "checkpoint.pt", weights_only=True) for r in ("a", "b"))
    for k, v in a["G"].items():
        assert torch.isfinite(v).all() and torch.equal(v, b["G"][k]), k
    assert {r["precision"] for r in _log(tmp_path / "a")} == {"bf16" if amp == "bf16" else "fp32"}


def test_channels_last_is_a_layout_only_and_may_change_on_resume(images, tmp_path):
    """NHWC training computes what NCHW does (float32: same losses and weights up to rounding); a run may switch
    layout when resumed, and the log says which one ran."""
    cfg = _cfg(images, kimg=0.016, ckpt_kimg=0.008, amp="off")  # 4 steps, checkpoint at 2
    train(cfg, tmp_path / "nhwc", progress=False)
    nchw = TrainConfig.from_dict({**cfg.to_dict(), "channels_last": False})
    train(nchw, tmp_path / "nchw", progress=False)
    la, lb = _log(tmp_path / "nhwc"), _log(tmp_path / "nchw")
    assert {r["layout"] for r in la} == {"channels_last"} and {r["layout"] for r in lb} == {"contiguous"}
    for ra, rb in zip(la, lb, strict=True):
        assert ra["loss_G"] == pytest.approx(rb["loss_G"], rel=1e-3, abs=1e-4)
        assert ra["loss_D"] == pytest.approx(rb["loss_D"], rel=1e-3, abs=1e-4)
    a, b = (torch.load(tmp_path / r / "checkpoint.pt", weights_only=True) for r in ("nhwc", "nchw"))
    for k, v in a["G"].items():
        torch.testing.assert_close(v, b["G"][k], rtol=1e-3, atol=1e-4, msg=k)
    # stopped in NCHW at step 2, resumed in NHWC: allowed, and it finishes
    train(nchw, tmp_path / "switch", stop_at_step=2, progress=False)
    res = train(cfg, tmp_path / "switch", progress=False)
    assert res["start_step"] == 2 and res["step"] == 4
    assert [r["layout"] for r in _log(tmp_path / "switch")] == ["contiguous", "channels_last"]


def test_amp_auto_follows_the_cpu_and_old_runs_still_load(images):
    from partseg.precision import cpu_has_bf16, resolve_amp

    assert resolve_amp("auto", torch.device("cpu")) == cpu_has_bf16()
    assert resolve_amp("auto", torch.device("cuda")) and not resolve_amp("off", torch.device("cuda"))
    assert TrainConfig.from_dict({**_cfg(images).to_dict(), "amp": True}).amp == "auto"  # run folders before modes
    assert TrainConfig.from_dict({**_cfg(images).to_dict(), "amp": False}).amp == "off"
    with pytest.raises(ValueError, match="amp must be one of auto, bf16, off"):
        _cfg(images, amp="fp8")


def test_explicit_channel_table(images, tmp_path):
    table = {4: 32, 8: 32, 16: 16, 32: 8}
    cfg = _cfg(images, kimg=0.008, channels=table)
    assert cfg.generator_config().channels == table
    train(cfg, tmp_path, progress=False)
    assert load_generator(tmp_path / "generator.safetensors").cfg.channels == table
    with pytest.raises(ValueError, match="no entry for resolutions"):
        _cfg(images, channels={4: 32, 8: 32})
    r = subprocess.run(_cli("gan", "train", str(images), "--out", str(tmp_path / "x"), *TINY_ARGS,
                            "--channels", "4:32,8"), capture_output=True, text=True)
    assert r.returncode != 0 and "--channels: expected RES:CHANNELS pairs" in r.stderr
