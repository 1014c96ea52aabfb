"""`partseg distill` as a resumable run (issue #17, D10-D13): a confidence filter that leaves nothing to learn is
one clear line, checkpoints come every --ckpt-every steps and a re-run says where it resumes, stale temporary
files of a killed write are removed, and other settings on an existing run are refused with the differences."""

from __future__ import annotations

import pytest
import torch

from partseg.data.dataset import write_sample_set
from partseg.distill.trainer import SegTrainConfig, fit_segmenter
from partseg.distill.unet import UNet, UNetConfig
from partseg.fewshot.learner import FewShotConfig, load_shots, train_head
from partseg.gan import save_generator
from partseg.gan.sampling import sample
from partseg.labels import Labels
from tests.conftest import run_cli

LABELS = Labels(["dark", "bright"], [(0, 0, 0), (255, 255, 255)])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny generator and two heads trained on it (the second from another seed), as files."""
    from partseg.gan import Generator
    from tests.conftest import tiny_config

    root = tmp_path_factory.mktemp("distill")
    torch.manual_seed(0)
    G = Generator(tiny_config())
    s = sample(G, 2, seed=0)
    write_sample_set(root / "shots", s, LABELS, masks=(s.images.mean(1) > s.images.mean()).byte().numpy())
    shots = load_shots(root / "shots")
    for name, seed in (("head", 0), ("head2", 1)):
        train_head(G, shots, FewShotConfig(head="mlp", steps=20, lr=3e-3, seed=seed), progress=False).save(
            root / f"{name}.safetensors")
    save_generator(G, root / "G.safetensors")
    return root


def _args(files, run, *extra: str, head: str = "head") -> list[str]:
    return ["distill", "--head", str(files / f"{head}.safetensors"), "--gan", str(files / "G.safetensors"),
            "--out", str(run), "--batch", "2", "--device", "cpu", *extra]


def test_confidence_one_is_a_clear_error_without_a_checkpoint(files, tmp_path, monkeypatch, capsys):
    code, out = run_cli(monkeypatch, capsys, *_args(files, tmp_path / "run", "--steps", "3", "--confidence", "1.0"))
    assert code == 1
    assert "Traceback" not in out
    err = [ln[ln.index("error:"):] for ln in out.splitlines() if "error:" in ln]
    assert len(err) == 1 and "--confidence 1.0" in err[0] and "lower --confidence" in err[0]
    assert "checkpoint" not in err[0]  # none was written, so none is named
    code, out = run_cli(monkeypatch, capsys, *_args(files, tmp_path / "r2", "--confidence", "1.5"))
    assert code == 1 and "confidence must be in [0, 1]" in out


def test_nan_loss_names_the_checkpoint_only_when_it_exists(tmp_path):
    cfg = SegTrainConfig(steps=4, ckpt_every=2, log_every=2)
    good = torch.zeros(2, 16, 16, dtype=torch.long)

    def stream(bad_from: int):
        def make(start: int):
            step = start
            while True:
                yield torch.randn(2, 3, 16, 16), (good + 255 if step >= bad_from else good)
                step += 1
        return make

    model = UNet(UNetConfig(num_classes=2, channels=[4, 8]))
    with pytest.raises(FloatingPointError) as e:
        fit_segmenter(model, stream(0), cfg, tmp_path / "a", progress=False)
    msg = str(e.value)
    assert "every pixel of the batch is ignored" in msg and "no checkpoint was written yet" in msg
    assert "checkpoint.pt" not in msg
    model = UNet(UNetConfig(num_classes=2, channels=[4, 8]))
    with pytest.raises(FloatingPointError, match=r"at step 3 .*last checkpoint, .*checkpoint\.pt, is kept"):
        fit_segmenter(model, stream(3), cfg, tmp_path / "b", progress=False)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 2


def test_checkpoints_every_n_steps_and_says_where_it_resumes(files, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    code, out = run_cli(monkeypatch, capsys, *_args(files, run, "--steps", "3", "--ckpt-every", "2"))
    assert code == 0, out
    assert f"starting {run} at step 0 of 3" in out
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 3
    # a kill mid-write leaves a temporary file beside the checkpoint; the re-run removes it
    (run / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (run / ".model.safetensors.x.tmp").write_bytes(b"")
    code, out = run_cli(monkeypatch, capsys, *_args(files, run, "--steps", "5", "--ckpt-every", "2"))
    assert code == 0, out
    assert f"resuming {run} at step 3 of 5" in out and "(resumed at step 3)" in out
    assert not list(run.glob(".*.tmp"))
    log = (run / "log.jsonl").read_text()
    assert '"step": 5' in log


@pytest.mark.parametrize("change", [["--seed", "1"], ["--batch", "4"], ["--confidence", "0.3"], ["head2"]])
def test_other_settings_on_an_existing_run_are_refused(files, tmp_path, monkeypatch, capsys, change):
    run = tmp_path / "run"
    assert run_cli(monkeypatch, capsys, *_args(files, run, "--steps", "1"))[0] == 0
    before = (run / "checkpoint.pt").read_bytes()
    if change == ["head2"]:
        args = _args(files, run, "--steps", "2", head="head2")
        want = "head: run has '"
    else:
        args = [*_args(files, run, "--steps", "2"), *change]
        want = {"--seed": "seed: run has 0, asked for 1", "--batch": "batch: run has 2, asked for 4",
                "--confidence": "confidence: run has 0.5, asked for 0.3"}[change[0]]
    code, out = run_cli(monkeypatch, capsys, *args)
    assert code == 1 and "Traceback" not in out
    assert want in out and "holds a run with different settings" in out and "run_config.json" in out
    assert (run / "checkpoint.pt").read_bytes() == before  # nothing was trained or written


def test_checkpoint_interval_and_a_run_killed_before_its_first_checkpoint(files, tmp_path, monkeypatch, capsys):
    from partseg.distill.autoshot import DistillConfig

    assert [DistillConfig(steps=s).checkpoint_interval for s in (3, 60, 3000)] == [1, 6, 100]
    assert DistillConfig(steps=60, ckpt_every=7).checkpoint_interval == 7
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.json").write_text("{}")  # what a run killed before its first checkpoint leaves
    code, out = run_cli(monkeypatch, capsys, *_args(files, run, "--steps", "2"))
    assert code == 0, out
    assert f"starting {run} at step 0 of 2 (the previous run of this folder stopped before its first checkpoint" in out
