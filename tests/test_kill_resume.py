"""kill -9 at random points of `partseg gan train`, `partseg distill` and `partseg train` (issue #17): every re-run
resumes, the final weights equal an uninterrupted run's bit for bit, and no kill leaves a truncated file.

Each trainer runs as a child process (forked from the test process, so a start costs no import time) executing the
real command line (`partseg.cli.main` with its argv), checkpointing every step or few steps; the test sends
SIGKILL a random time after a checkpoint appears, checks that every file in the run folder still reads, and starts
the same command again, PARTSEG_KILLS times (default 3), then lets it finish. The uninterrupted reference runs
alongside. About 10-20 s per trainer on 2 busy cores; `PARTSEG_KILLS=20` for a longer loop.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from partseg.data.dataset import write_sample_set
from partseg.fewshot.learner import FewShotConfig, load_shots, train_head
from partseg.gan import Generator, save_generator
from partseg.gan.sampling import sample
from partseg.labels import Labels
from tests.conftest import tiny_config

KILLS = int(os.environ.get("PARTSEG_KILLS", "3"))
CTX = multiprocessing.get_context("fork")


def _child(argv: list[str], log: str) -> None:
    """Run the command line in this forked child; exit without running the parent's (pytest's) exit handlers."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - pytest replaced the parent's streams
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    torch.set_num_threads(1)
    # tqdm's write lock holds a multiprocessing semaphore shared by every process forked from this one: a sibling
    # killed while drawing its bar never releases it and every later bar (the parent's too) waits forever
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    code = 0
    try:
        from partseg.cli import main

        sys.argv = ["partseg", *argv]
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    except BaseException:  # noqa: BLE001 - report it in the log, the parent checks the exit code
        import traceback

        traceback.print_exc()
        code = 3
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def start(argv: list[str], log: Path):
    log.touch()
    p = CTX.Process(target=_child, args=(argv, str(log)))
    p.start()
    return p


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def assert_intact(folder: Path) -> int:
    """Every file in the run folder reads completely; returns how many stale .tmp files (killed writes) there are."""
    stale = 0
    for p in folder.rglob("*"):
        if not p.is_file():
            continue
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            stale += 1  # the half-written copy of a killed atomic write: the real file is intact, a re-run removes it
        elif p.suffix == ".pt":
            assert isinstance(torch.load(p, weights_only=True), dict), p
        elif p.suffix == ".safetensors":
            with safe_open(str(p), framework="pt") as f:
                for k in f.keys():
                    f.get_tensor(k)
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".jsonl":
            for ln in p.read_text().splitlines():
                json.loads(ln)
        elif p.suffix == ".png":
            with Image.open(p) as im:
                im.load()
    return stale


def kill_loop(argv: list[str], watch: Path, folder: Path, tmp: Path, max_delay: float) -> dict:
    """Start, SIGKILL a random time after the next checkpoint lands, check the files, repeat; then finish."""
    rng = random.Random(int(os.environ.get("PARTSEG_KILL_SEED", "0")) * 1000 + len(str(watch)))
    stats = {"kills": 0, "stale_tmp_seen": 0, "finished_before_kill": 0, "checkpoint_at_kill": []}
    for i in range(KILLS):
        before = _mtime(watch)
        p = start(argv, tmp / f"kill{i}.log")
        deadline = time.time() + 120
        while p.is_alive() and _mtime(watch) == before and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, max_delay))
        if not p.is_alive():  # it finished first: that (resumed) run is the final one
            stats["finished_before_kill"] += 1
            final = tmp / f"kill{i}.log"
            break
        p.kill()  # SIGKILL
        p.join()
        stats["kills"] += 1
        stats["stale_tmp_seen"] += assert_intact(folder)
        if watch.exists():
            ck = torch.load(watch, weights_only=True)
            stats["checkpoint_at_kill"].append(ck["step"] if "member" not in ck else (ck["member"], ck["step"]))
    else:
        final = tmp / "final.log"
        p = start(argv, final)
    p.join(300)
    log = final.read_text()
    assert p.exitcode == 0, log[-3000:]
    assert not list(folder.glob(".*.tmp")), "stale temporary files left after the final run"
    stats["final_log"] = log
    return stats


def reference(argv: list[str], tmp: Path):
    return start(argv, tmp / "reference.log")


def finish_reference(p, tmp: Path) -> None:
    p.join(300)
    assert p.exitcode == 0, (tmp / "reference.log").read_text()[-3000:]


def assert_same_tensors(a: Path, b: Path) -> None:
    with safe_open(str(a), framework="pt") as fa, safe_open(str(b), framework="pt") as fb:
        assert sorted(fa.keys()) == sorted(fb.keys())
        for k in fa.keys():
            assert torch.equal(fa.get_tensor(k), fb.get_tensor(k)), f"{k} differs from the uninterrupted run"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kill")
    torch.manual_seed(0)
    G = Generator(tiny_config())
    save_generator(G, root / "G.safetensors")
    labels = Labels(["dark", "bright"], [(0, 0, 0), (255, 255, 255)])
    s = sample(G, 2, seed=0)
    write_sample_set(root / "shots", s, labels, masks=(s.images.mean(1) > s.images.mean()).byte().numpy())
    train_head(G, load_shots(root / "shots"), FewShotConfig(head="mlp", steps=20, lr=3e-3),
               progress=False).save(root / "head.safetensors")
    (root / "imgs").mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(root / "imgs" / f"{i}.png")
    return root


def test_distill_survives_kill_9(world, tmp_path):
    def argv(run: Path) -> list[str]:
        return ["distill", "--head", str(world / "head.safetensors"), "--gan", str(world / "G.safetensors"),
                "--out", str(run), "--steps", "40", "--batch", "2", "--ckpt-every", "1", "--device", "cpu"]

    ref = reference(argv(tmp_path / "ref"), tmp_path)
    run = tmp_path / "run"
    stats = kill_loop(argv(run), run / "checkpoint.pt", run, tmp_path, max_delay=1.5)
    finish_reference(ref, tmp_path)
    assert stats["kills"] >= 1 and "resuming " in stats["final_log"]
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 40
    assert_same_tensors(tmp_path / "ref" / "model.safetensors", run / "model.safetensors")
    print("kill stats:", {k: v for k, v in stats.items() if k != "final_log"})


def test_head_training_survives_kill_9(world, tmp_path):
    def argv(out: Path) -> list[str]:
        return ["train", "--shots", str(world / "shots"), "--gan", str(world / "G.safetensors"), "--head", "mlp",
                "--ensemble", "2", "--steps", "60", "--ckpt-every", "3", "--out", str(out)]

    (tmp_path / "ref").mkdir()
    (tmp_path / "run").mkdir()
    ref = reference(argv(tmp_path / "ref" / "head.safetensors"), tmp_path)
    out = tmp_path / "run" / "head.safetensors"
    stats = kill_loop(argv(out), out.with_name("head.safetensors.ckpt.pt"), out.parent, tmp_path, max_delay=0.8)
    finish_reference(ref, tmp_path)
    assert stats["kills"] >= 1 and "resuming head training from" in stats["final_log"]
    assert not out.with_name("head.safetensors.ckpt.pt").exists()
    assert_same_tensors(tmp_path / "ref" / "head.safetensors", out)
    print("kill stats:", {k: v for k, v in stats.items() if k != "final_log"})


def test_gan_training_survives_kill_9(world, tmp_path):
    def argv(run: Path) -> list[str]:
        return ["gan", "train", str(world / "imgs"), "--out", str(run), "--kimg", "0.064", "--ckpt-kimg", "0.004",
                "--resolution", "32", "--batch", "4", "--z-dim", "32", "--w-dim", "32", "--channel-base", "512",
                "--channel-max", "32", "--workers", "0"]

    ref = reference(argv(tmp_path / "ref"), tmp_path)
    run = tmp_path / "run"
    stats = kill_loop(argv(run), run / "checkpoint.pt", run, tmp_path, max_delay=1.0)
    finish_reference(ref, tmp_path)
    assert stats["kills"] >= 1 and f"resuming {run} at step" in stats["final_log"]
    a = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)
    b = torch.load(run / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 16
    for net in ("G", "D", "G_ema"):
        for k, v in a[net].items():
            assert torch.equal(v, b[net][k]), f"{net}.{k} differs from the uninterrupted run"
    assert_same_tensors(tmp_path / "ref" / "generator.safetensors", run / "generator.safetensors")
    print("kill stats:", {k: v for k, v in stats.items() if k != "final_log"})


def test_distill_sigterm_writes_a_checkpoint_and_stops(world, tmp_path):
    run = tmp_path / "run"
    argv = ["distill", "--head", str(world / "head.safetensors"), "--gan", str(world / "G.safetensors"), "--out",
            str(run), "--steps", "400", "--batch", "2", "--ckpt-every", "1000", "--device", "cpu"]
    p = start(argv, tmp_path / "term.log")
    deadline = time.time() + 120
    while p.is_alive() and "distill:" not in (tmp_path / "term.log").read_text() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    os.kill(p.pid, signal.SIGTERM)
    p.join(60)
    log = (tmp_path / "term.log").read_text()
    assert p.exitcode == 0, log[-3000:]
    step = torch.load(run / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < step < 400 and f"stopped at step {step} of 400; checkpoint written to {run}" in log
