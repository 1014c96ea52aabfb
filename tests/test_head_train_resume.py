"""`partseg train` on bad shots and as a resumable run (issue #17, D9): a corrupt or short latents file is one line
naming the file, the field and what was expected; shots without latents are announced before the (slow)
inversion; an interrupted head training resumes to the weights of an uninterrupted one."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import partseg.fewshot.learner as fewshot
from partseg.data.dataset import write_sample_set
from partseg.fewshot.learner import FewShotConfig, load_shots, shots_to_invert, train_head
from partseg.gan import Generator, save_generator
from partseg.gan.sampling import sample
from partseg.labels import Labels
from tests.conftest import run_cli, tiny_config

LABELS = Labels(["dark", "bright"], [(0, 0, 0), (255, 255, 255)])


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("shots")
    torch.manual_seed(0)
    G = Generator(tiny_config())
    s = sample(G, 3, seed=0)
    write_sample_set(root / "shots", s, LABELS, masks=(s.images.mean(1) > s.images.mean()).byte().numpy())
    save_generator(G, root / "G.safetensors")
    return root, G


def _copy(made, tmp_path):
    shutil.copytree(made[0] / "shots", tmp_path / "shots")
    return tmp_path / "shots"


def _train(made, shots, out, monkeypatch, capsys, *extra):
    return run_cli(monkeypatch, capsys, "train", "--shots", str(shots), "--gan", str(made[0] / "G.safetensors"),
                   "--head", "mlp", "--steps", "4", "--out", str(out), *extra)


def test_corrupt_latents_is_one_line_naming_the_file(made, tmp_path, monkeypatch, capsys):
    shots = _copy(made, tmp_path)
    (shots / "latents.safetensors").write_bytes(b"\x00\x01 not safetensors")
    code, out = _train(made, shots, tmp_path / "h.safetensors", monkeypatch, capsys)
    assert code == 1 and "Traceback" not in out
    err = [ln for ln in out.splitlines() if "error:" in ln]
    assert len(err) == 1 and f"{shots / 'latents.safetensors'}: not a readable safetensors file" in err[0]
    assert "'ws'" in err[0]
    lat = load_file(str(made[0] / "shots" / "latents.safetensors"))
    save_file({"z": lat["z"]}, str(shots / "latents.safetensors"))  # readable, but without the field
    code, out = _train(made, shots, tmp_path / "h.safetensors", monkeypatch, capsys)
    assert code == 1 and "field 'ws' is no such tensor (has ['z'])" in out


def test_fewer_latent_rows_than_samples(made, tmp_path, monkeypatch, capsys):
    shots = _copy(made, tmp_path)
    lat = load_file(str(shots / "latents.safetensors"))
    save_file({k: v[:2].contiguous() for k, v in lat.items()}, str(shots / "latents.safetensors"))
    code, out = _train(made, shots, tmp_path / "h.safetensors", monkeypatch, capsys)
    assert code == 1 and "Traceback" not in out
    assert f"{shots / 'samples.json'}: sample " in out and "has 'index' 2, but the latents file has 2 rows" in out
    assert "expected an index in 0..1" in out


def test_latents_of_another_generator_are_refused(made, tmp_path):
    shots = _copy(made, tmp_path)
    lat = load_file(str(shots / "latents.safetensors"))
    save_file({"ws": lat["ws"][:, :3].contiguous()}, str(shots / "latents.safetensors"))
    with pytest.raises(ValueError, match=r"field 'ws' of the latents has shape \[3, 3, 32\], expected \[N, \d+, 32\]"):
        load_shots(shots, made[1])


def test_shots_without_latents_are_announced(made, tmp_path, monkeypatch, capsys):
    shots = _copy(made, tmp_path)
    assert shots_to_invert(shots) == 0
    (shots / "samples.json").unlink()
    (shots / "latents.safetensors").unlink()
    for name in sorted(p.name for p in (shots / "images").iterdir())[1:]:  # one image keeps the test short
        (shots / "images" / name).unlink()
        (shots / "masks" / name).unlink()
    assert shots_to_invert(shots) == 1
    code, out = _train(made, shots, tmp_path / "h.safetensors", monkeypatch, capsys, "--invert-steps", "3")
    assert code == 0, out
    assert "note: 1 annotated image(s)" in out and "inverting them into the GAN first, 3 steps, roughly" in out


@pytest.mark.parametrize("head,ensemble,die_at,resume_at", [("mlp", 2, 4, (1, 5)), ("cnn", 1, 2, (0, 10))])
def test_interrupted_head_training_resumes_exactly(made, tmp_path, monkeypatch, head, ensemble, die_at, resume_at):
    shots = load_shots(made[0] / "shots")
    cfg = FewShotConfig(head=head, steps=12, ensemble=ensemble, lr=3e-3)
    ref = train_head(made[1], shots, cfg, progress=False)
    real_save = fewshot.atomic_torch_save
    calls = {"n": 0}

    def save_then_die(obj, path):  # a kill right after a checkpoint write
        real_save(obj, path)
        calls["n"] += 1
        if calls["n"] == die_at:
            raise KeyboardInterrupt

    ckpt = tmp_path / "h.ckpt.pt"
    monkeypatch.setattr(fewshot, "atomic_torch_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_head(made[1], shots, cfg, progress=False, checkpoint=ckpt, ckpt_every=5)
    monkeypatch.setattr(fewshot, "atomic_torch_save", real_save)
    state = torch.load(ckpt, weights_only=True)
    assert (state["member"], state["step"]) == resume_at
    (tmp_path / ".h.ckpt.pt.x1y2.tmp").write_bytes(b"torn")  # a write killed midway
    got = train_head(made[1], shots, cfg, progress=False, checkpoint=ckpt, ckpt_every=5)
    assert not list(tmp_path.glob(".*.tmp"))
    for k, v in ref.ensemble.state_dict().items():
        assert torch.equal(v, got.ensemble.state_dict()[k]), k
    with pytest.raises(ValueError, match=r"different settings \(steps: run has 12, asked for 13\); delete "):
        train_head(made[1], shots, FewShotConfig(head=head, steps=13, ensemble=ensemble, lr=3e-3),
                   progress=False, checkpoint=ckpt)


def test_cli_train_removes_its_checkpoint(made, tmp_path, monkeypatch, capsys):
    out = tmp_path / "h.safetensors"
    code, text = _train(made, made[0] / "shots", out, monkeypatch, capsys, "--ckpt-every", "2")
    assert code == 0, text
    assert out.is_file() and not (tmp_path / "h.safetensors.ckpt.pt").exists()
    assert json.loads(json.dumps(sorted(p.name for p in tmp_path.iterdir()))) == ["h.safetensors"]
