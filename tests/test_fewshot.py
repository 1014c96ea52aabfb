"""Few-shot head training on a tiny GAN: fits its shots, is deterministic, records and checks its GAN."""

from __future__ import annotations

import pytest
import torch

from partseg.data.dataset import write_sample_set
from partseg.fewshot.invert import InversionConfig
from partseg.fewshot.learner import FewShotConfig, FewShotHead, load_shots, train_head
from partseg.gan import Generator
from partseg.gan.sampling import sample
from partseg.labels import Labels
from tests.conftest import tiny_config

LABELS = Labels(["dark", "bright"], [(0, 0, 0), (255, 255, 255)])


@pytest.fixture
def shots(tmp_path, tiny_G):
    s = sample(tiny_G, 3, seed=0)
    masks = (s.images.mean(1) > s.images.mean()).byte().numpy()  # a labelling the features can express
    write_sample_set(tmp_path / "shots", s, LABELS, masks=masks)
    return load_shots(tmp_path / "shots")


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_head_fits_its_shots_and_round_trips(tiny_G, shots, kind, tmp_path):
    cfg = FewShotConfig(head=kind, steps=400 if kind == "cnn" else 150, lr=1e-3 if kind == "cnn" else 3e-3)
    head = train_head(tiny_G, shots, cfg, progress=False)
    _, logp = head.predict_ws(tiny_G, shots.ws)
    acc = (logp.argmax(1) == shots.masks).float().mean()
    assert acc > 0.85
    head.save(tmp_path / "h.safetensors")
    again = FewShotHead.load(tmp_path / "h.safetensors", tiny_G)
    assert torch.equal(again.predict_ws(tiny_G, shots.ws)[1], logp)
    assert again.labels == LABELS and again.meta["layers"] == head.meta["layers"]


def test_training_is_deterministic(tiny_G, shots):
    cfg = FewShotConfig(head="mlp", steps=20)
    a = train_head(tiny_G, shots, cfg, progress=False)
    b = train_head(tiny_G, shots, cfg, progress=False)
    for (k, v), w in zip(a.ensemble.state_dict().items(), b.ensemble.state_dict().values(), strict=True):
        assert torch.equal(v, w), k


def test_head_refuses_another_gan(tiny_G, shots, tmp_path):
    head = train_head(tiny_G, shots, FewShotConfig(head="cnn", steps=2), progress=False)
    head.save(tmp_path / "h.safetensors")
    torch.manual_seed(123)
    other = Generator(tiny_config())
    with pytest.raises(ValueError, match="trained on the features of another GAN"):
        FewShotHead.load(tmp_path / "h.safetensors", other)


def test_annotated_real_images_are_inverted_first(tmp_path, shots, tiny_G):
    (tmp_path / "shots" / "samples.json").unlink()  # now plain annotated images: no latents
    with pytest.raises(ValueError, match="need GAN inversion; pass the generator"):
        load_shots(tmp_path / "shots")
    tiny_G.compute_mean_w(n=256)
    real = load_shots(tmp_path / "shots", tiny_G, InversionConfig(steps=5))
    assert real.real == [True] * 3 and real.noise is not None and real.ws.shape == shots.ws.shape
    head = train_head(tiny_G, real, FewShotConfig(head="mlp", steps=5), progress=False)
    assert head.predict_ws(tiny_G, real.ws[:1], noise=real.noise[0])[1].shape[1] == 2
