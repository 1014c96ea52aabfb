"""Issue #16 part 3: the few-shot stages in bounded memory give the whole-map results (tiles, crops, pixels)."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image

from partseg.cli import app
from partseg.distill.autoshot import make_pairs
from partseg.features import pixel_features
from partseg.fewshot.crops import CachedShots, masks_at, shot_loss
from partseg.fewshot.heads import Ensemble, HeadConfig
from partseg.fewshot.learner import FewShotConfig, FewShotHead, Shots, train_head
from partseg.fewshot.memory import GB, TrainPlan, budget_bytes, head_margin, plan_prediction, plan_training
from partseg.gan.interface import as_fewshot_gan, load_fewshot_gan
from partseg.labels import FACES
from tests.test_any_generator import LABELS, LAYERS, SPEC, _masks_from_images, _ok, runner, user_module  # noqa: F401

K = len(FACES)


def _head(G, size: int, kind: str = "cnn", members: int = 1, seed: int = 0) -> FewShotHead:
    src = as_fewshot_gan(G).source("paper")
    torch.manual_seed(seed)
    ens = Ensemble(HeadConfig(kind=kind, in_channels=sum(src.channels.values()), num_classes=K), members).eval()
    meta = {"layers": src.layers, "size": size, "mode": "bilinear", "noise_mode": "const",
            "gan_fingerprint": as_fewshot_gan(G).fingerprint()}
    return FewShotHead(ens, FACES, meta)


def _shots(G, teacher: FewShotHead, n: int = 2, mask_size: int | None = None) -> Shots:
    """Shots whose masks are a fixed head's whole-map prediction (so a head can learn them exactly)."""
    ws = G.ws_from_z(torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(5)))
    masks = teacher.predict_ws(G, ws)[1].argmax(1)
    if mask_size:
        masks = torch.nn.functional.interpolate(masks[:, None].float(), size=(mask_size,) * 2)[:, 0].long()
    return Shots([f"s{i}" for i in range(n)], ws, list(range(n)), "const", masks, FACES)


def test_the_cnn_margin_is_its_receptive_field():
    assert head_margin(Ensemble(HeadConfig(kind="cnn", in_channels=3, num_classes=2), 2)) == 30  # 61 px
    assert head_margin(Ensemble(HeadConfig(kind="mlp", in_channels=3, num_classes=2))) == 0


@pytest.mark.parametrize("members", [1, 2])
def test_tiled_prediction_equals_the_whole_map(tiny_G, members):
    head = _head(tiny_G, size=128, members=members)
    ws = tiny_G.ws_from_z(torch.randn(2, tiny_G.z_dim, generator=torch.Generator().manual_seed(1)))
    img, full = head.predict_ws(tiny_G, ws)
    for tile in (32, 45):  # 45 leaves smaller edge tiles
        img_t, tiled = head.predict_ws(tiny_G, ws, tile=tile)
        torch.testing.assert_close(img_t, img)  # one sample per pass: batch-size rounding only
        torch.testing.assert_close(tiled, full, rtol=1e-4, atol=1e-4)
        assert torch.equal(tiled.argmax(1), full.argmax(1))


def test_a_small_budget_chooses_passes_then_tiles(tiny_G):
    src = as_fewshot_gan(tiny_G).source("paper")
    assert plan_prediction(src, 4, 128, 30, K, budget_bytes(8)).full
    chunked = plan_prediction(src, 4, 128, 30, K, int(0.08 * GB))
    assert not chunked.full and 1 <= chunked.chunk < 4 and chunked.tile >= 128
    tiled = plan_prediction(src, 4, 128, 30, K, int(0.015 * GB))
    assert not tiled.full and tiled.chunk == 1 and 8 <= tiled.tile < 128
    with pytest.raises(ValueError, match="too small"):
        plan_prediction(src, 4, 128, 30, K, 1000)
    assert not plan_training(src, 2, 128, "cnn", int(0.1 * GB), 30).full
    assert budget_bytes("0.5") == budget_bytes("0.5GB") == GB // 2 and budget_bytes("auto") > 0
    with pytest.raises(ValueError, match="number of GB"):
        budget_bytes("lots")


def test_tiny_memory_prediction_with_per_sample_noise_matches(tiny_G):
    """Passes of one sample each take their own seeds' noise: the same as the whole batch at once."""
    head = _head(tiny_G, size=64, seed=2)
    ws = tiny_G.ws_from_z(torch.randn(3, tiny_G.z_dim, generator=torch.Generator().manual_seed(3)))
    kw = {"noise_mode": "random", "seeds": [7, 8, 9]}
    _, full = head.predict_ws(tiny_G, ws, **kw)
    assert plan_prediction(as_fewshot_gan(tiny_G).source("paper"), 3, 64, 30, K, budget_bytes(0.01)).chunk == 1
    _, small = head.predict_ws(tiny_G, ws, memory=0.01, **kw)
    torch.testing.assert_close(small, full, rtol=1e-4, atol=1e-4)
    assert torch.equal(small.argmax(1), full.argmax(1))


def test_make_pairs_in_tiles_gives_the_same_labels(tiny_G):
    head = _head(tiny_G, size=128, seed=4)
    x, y = make_pairs(tiny_G, head, 2, torch.Generator().manual_seed(0))
    head.memory = 0.015  # tiles (test_a_small_budget_chooses_passes_then_tiles)
    x_t, y_t = make_pairs(tiny_G, head, 2, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x_t, x)  # one sample per pass: batch-size rounding only
    assert torch.equal(y_t, y)


def test_a_mask_stays_aligned_with_its_crop(tiny_G):
    """A crop's window through the teacher gives exactly the crop of the teacher's mask (margin and offsets
    right), for masks finer than the features or not; a mask of another size is cropped at the feature size."""
    teacher = _head(tiny_G, size=128, seed=3)
    G = as_fewshot_gan(tiny_G)
    plan = TrainPlan(False, crop=8, cache_dtype=torch.float32)
    for mask_size in (256, 128, 192):  # 2x the features, equal, not a multiple
        shots = _shots(tiny_G, teacher, mask_size=mask_size)
        data = CachedShots(G, shots, FewShotConfig(head="cnn", size=128, steps=1), plan, margin=30)
        for i, y0, x0 in [(0, 0, 0), (1, 120, 3), (1, 50, 120), (0, 60, 61)]:
            x, rows, cols = data.window(i, y0, x0)
            assert x.shape[-1] < 128 or x0 == 61  # a real crop, not the whole map
            want = data.target(i, y0, x0)
            if mask_size == 192:
                assert torch.equal(want, masks_at(shots.masks, 128)[i:i + 1, y0:y0 + 8, x0:x0 + 8])
                continue
            k = mask_size // 128
            assert want.shape[-1] == 8 * k
            assert torch.equal(teacher.ensemble(x)[:, :, rows, cols].argmax(1), want[:, ::k, ::k])


def test_crop_training_learns_and_predicts_on_whole_maps(tiny_G):
    teacher = _head(tiny_G, size=128, seed=3)
    shots = _shots(tiny_G, teacher)
    cfg = FewShotConfig(head="cnn", size=128, steps=40, lr=3e-3)
    head = train_head(tiny_G, shots, cfg, progress=False, memory=0.1)
    assert head.meta["memory_plan"]["crop"] < 128  # crops, not whole maps
    feats = pixel_features(as_fewshot_gan(tiny_G).source("paper"), shots.ws, size=128)[1]
    torch.manual_seed(cfg.seed)
    untrained = Ensemble(head.ensemble.cfg).eval()
    with torch.no_grad():
        before, after = shot_loss(untrained(feats), shots.masks), shot_loss(head.ensemble(feats), shots.masks)
    assert after < 0.7 * before
    _, logp = head.predict_ws(tiny_G, shots.ws)  # the whole-map path with the crop-trained head
    assert logp.shape == (2, K, 128, 128)
    assert (logp.argmax(1) == shots.masks).float().mean() > 0.5


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_mlp_on_sampled_pixels_matches_whole_maps(tiny_G, gamma):
    """The cached path draws the same pixels as the whole-map path, so both train (nearly) the same MLP, with the
    cross-entropy and with the focal loss (each path must pass the loss setting on)."""
    teacher = _head(tiny_G, size=64, kind="mlp", seed=3)
    shots = _shots(tiny_G, teacher, mask_size=32)
    cfg = FewShotConfig(head="mlp", size=64, steps=15, lr=3e-3, pixels_per_step=256, focal_gamma=gamma,
                        amp="off")  # float32: the two paths differ by float rounding, which bf16 would amplify
    full = train_head(tiny_G, shots, cfg, progress=False)
    small = train_head(tiny_G, shots, cfg, progress=False, memory=0.005)
    assert "memory_plan" not in full.meta and small.meta["memory_plan"]["cache_dtype"] == "float32"
    # Adam's first steps turn the paths' rounding differences in near-zero gradients into lr-sized ones; the focal
    # loss makes more gradients near zero (measured: 2.7e-5 apart with cross-entropy, 1.8e-4 with focal)
    atol = 5e-4 if gamma else 1e-4
    for (name, a), b in zip(full.ensemble.state_dict().items(), small.ensemble.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=atol, msg=name)
    if gamma:  # the loss setting reaches the weights: the same run with cross-entropy ends elsewhere (0.13 apart)
        ce = train_head(tiny_G, shots, FewShotConfig(**{**asdict(cfg), "focal_gamma": 0.0}), progress=False)
        assert any(not torch.allclose(a, b, atol=1e-2) for a, b in
                   zip(full.ensemble.state_dict().values(), ce.ensemble.state_dict().values(), strict=True))


def test_cli_memory_setting_with_a_user_generator(tmp_path, user_module):  # noqa: F811
    """`train --size --memory` trains on crops; `predict --memory` small (tiles) and large (whole maps) write the
    same labels; a bad --memory is a one-line error."""
    LABELS.save(tmp_path / "labels.json")
    kit, head = tmp_path / "kit", tmp_path / "head.safetensors"
    _ok(["annotate", "export", "--gan", SPEC, "--layers", LAYERS, "-n", "4", "--labels", str(tmp_path / "labels.json"),
         "--out", str(kit)])
    _masks_from_images(kit)
    _ok(["train", "--shots", str(kit), "--gan", SPEC, "--layers", LAYERS, "--head", "cnn", "--steps", "60",
         "--size", "128", "--memory", "0.1", "--class-weights", "none", "--focal-gamma", "1.5", "--out", str(head)])
    h = FewShotHead.load(head, load_fewshot_gan(SPEC))
    assert h.meta["size"] == 128 and 8 <= h.meta["memory_plan"]["crop"] < 128
    assert h.meta["train_config"]["focal_gamma"] == 1.5  # the option reaches the recipe (cnn's default is 0)
    labels = {}
    for memory in ("0.02", "8"):
        _ok(["predict", str(kit), "--mode", "head", "--head", str(head), "--gan", SPEC, "--memory", memory,
             "--out", str(tmp_path / memory)])
        labels[memory] = [np.asarray(Image.open(p)) for p in sorted((tmp_path / memory / "labels").glob("*.png"))]
    assert len(labels["8"]) == 4 and all(np.array_equal(a, b) for a, b in zip(labels["0.02"], labels["8"], strict=True))
    masks = [np.asarray(Image.open(p)) for p in sorted((kit / "masks").glob("*.png"))]
    assert np.mean([(a == m).mean() for a, m in zip(labels["8"], masks, strict=True)]) > 0.7  # learnt from crops
    r = runner.invoke(app, ["train", "--shots", str(kit), "--gan", SPEC, "--layers", LAYERS, "--memory", "lots",
                            "--out", str(tmp_path / "x.safetensors")])
    assert r.exit_code != 0 and "--memory" in r.output
    r = runner.invoke(app, ["train", "--shots", str(kit), "--gan", SPEC, "--layers", LAYERS, "--focal-gamma", "-1",
                            "--out", str(tmp_path / "x.safetensors")])
    assert r.exit_code != 0 and "--focal-gamma" in r.output and ">= 0" in r.output
