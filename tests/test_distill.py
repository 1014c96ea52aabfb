"""Auto-shot distillation on a tiny GAN: pairs obey the confidence filter, training resumes exactly, the pair
cache replays the generated stream, two gloo processes stay in sync (and resume), the CLI wires it all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import partseg.distill.autoshot as distill_module
from partseg.cli import app
from partseg.data.dataset import load_dataset, write_image, write_sample_set
from partseg.distill.autoshot import CACHE_FILE, DistillConfig, distill, make_pairs, pair_stream, probe_class_weights
from partseg.distill.trainer import segmentation_loss
from partseg.distill.unet import UNet, UNetConfig
from partseg.fewshot.learner import FewShotConfig, FewShotHead, load_shots, train_head
from partseg.gan import load_generator, save_generator
from partseg.gan.sampling import sample
from partseg.labels import IGNORE, Labels

LABELS = Labels(["dark", "bright"], [(0, 0, 0), (255, 255, 255)])


def _head(tiny_G, tmp_path):
    s = sample(tiny_G, 2, seed=0)
    write_sample_set(tmp_path / "shots", s, LABELS, masks=(s.images.mean(1) > s.images.mean()).byte().numpy())
    return train_head(tiny_G, load_shots(tmp_path / "shots"), FewShotConfig(head="mlp", steps=60, lr=3e-3),
                      progress=False)


def test_confidence_filter_marks_unsure_pixels(tiny_G, tmp_path):
    head = _head(tiny_G, tmp_path)
    x, y_all = make_pairs(tiny_G, head, 3, torch.Generator().manual_seed(0), confidence=0.0)
    _, y_conf = make_pairs(tiny_G, head, 3, torch.Generator().manual_seed(0), confidence=0.99)
    assert x.shape == (3, 3, 32, 32) and not (y_all == IGNORE).any()
    ignored = y_conf == IGNORE
    assert 0 < ignored.float().mean() < 1
    assert torch.equal(y_conf[~ignored], y_all[~ignored])  # filtering only removes, never relabels


def test_ignored_pixels_do_not_contribute_to_the_loss():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :2] = IGNORE
    segmentation_loss(logits, target).backward()
    assert (logits.grad[0, :, :2] == 0).all() and (logits.grad[0, :, 2:] != 0).any()


def test_short_distillation_learns_and_resumes(tiny_G, tmp_path):
    head = _head(tiny_G, tmp_path)
    cfg = DistillConfig(steps=80, batch=4, lr=5e-3, channels=[8, 16], confidence=0.0, augment=False, val_every=0)
    a, res = distill(tiny_G, head, cfg, tmp_path / "a", progress=False)
    # the UNet agrees with the head on fresh generated images well above chance
    x, y = make_pairs(tiny_G, head, 8, torch.Generator().manual_seed(99))
    majority = max(y.float().mean(), 1 - y.float().mean())
    assert (a(x).argmax(1) == y).float().mean() > majority + 0.05
    distill(tiny_G, head, cfg, tmp_path / "b", progress=False, stop_at_step=30)
    b, res_b = distill(tiny_G, head, cfg, tmp_path / "b", progress=False)
    assert res_b["start_step"] == 30
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def _take(stream, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [next(stream) for _ in range(k)]


def test_pair_cache_replays_the_generated_stream(tiny_G, tmp_path, monkeypatch):
    head = _head(tiny_G, tmp_path)
    cfg = DistillConfig(batch=3, confidence=0.9, augment=False)
    cache = tmp_path / "cache"
    aug = replace(cfg, augment=True)
    plain, plain_aug = _take(pair_stream(tiny_G, head, cfg)(0), 3), _take(pair_stream(tiny_G, head, aug)(0), 3)
    written = _take(pair_stream(tiny_G, head, cfg, cache=cache)(0), 3)
    for (xp, yp), (xw, yw) in zip(plain, written, strict=True):
        assert torch.equal(yp, yw) and (yw == IGNORE).any()  # labels exact, ignored pixels included
        assert (xp - xw).abs().max() <= 0.5 / 127.5 + 1e-6  # images: uint8 quantisation only
    # the cache is a data set in the project's layout
    labels, items = load_dataset(cache)
    assert labels == head.labels and [n for n, _, _ in items][:2] == ["rank00_step0000000_000",
                                                                      "rank00_step0000000_001"]
    assert len(items) == 9 and json.loads((cache / CACHE_FILE).read_text())["pairs_per_process"] == 3

    # a step missing a file (a run killed mid-write) is rendered again
    (cache / "masks" / "rank00_step0000001_002.png").unlink()
    assert all(torch.equal(a, b) for p, q in zip(_take(pair_stream(tiny_G, head, cfg, cache=cache)(1), 1),
                                                 written[1:2], strict=True) for a, b in zip(p, q, strict=True))
    assert (cache / "masks" / "rank00_step0000001_002.png").is_file()

    # re-runs read the cache (nothing is rendered) and see exactly the pairs the writing run trained on
    def no_rendering(*a, **k):
        raise AssertionError("rendered a cached step")

    monkeypatch.setattr(distill_module, "_label_latents", no_rendering)
    for start in (0, 1):  # from the start and resumed
        again = _take(pair_stream(tiny_G, head, cfg, cache=cache)(start), 3 - start)
        for (xa, ya), (xw, yw) in zip(again, written[start:], strict=True):
            assert torch.equal(xa, xw) and torch.equal(ya, yw)
    # augmentation continues the same seed stream: labels stay exact, images within the quantisation
    for (xa, ya), (xp, yp) in zip(_take(pair_stream(tiny_G, head, aug, cache=cache)(0), 3), plain_aug, strict=True):
        assert torch.equal(ya, yp) and (xa - xp).abs().max() <= 2 / 127.5


def test_pool_reuses_its_first_pairs_and_resumes_into_the_same_stream(tiny_G, tmp_path, monkeypatch):
    head = _head(tiny_G, tmp_path)
    cfg = DistillConfig(batch=3, confidence=0.0, augment=False, pool=5)  # 5 pairs: steps 0 and 1 (3 + 3)
    fresh = _take(pair_stream(tiny_G, head, replace(cfg, pool=0))(0), 2)
    pooled = _take(pair_stream(tiny_G, head, cfg)(0), 8)
    for (xf, yf), (xp, yp) in zip(fresh, pooled[:2], strict=True):  # inside the pool: the usual pairs
        assert torch.equal(xf, xp) and torch.equal(yf, yp)
    kept = torch.cat([x for x, _ in pooled[:2]])
    later = torch.cat([x for x, _ in pooled[2:]])
    # every later image is one of the 6 kept ones, and the draws use more than one of them
    match = (later[:, None] == kept[None]).flatten(2).all(2)
    assert match.any(1).all() and match.any(0).sum() > 1
    for x, y in pooled[2:]:  # labels travel with their images
        for xi, yi in zip(x, y, strict=True):
            j = int((kept == xi).flatten(1).all(1).nonzero()[0])
            assert torch.equal(yi, torch.cat([y for _, y in pooled[:2]])[j])

    calls = []
    real = distill_module.make_pairs
    monkeypatch.setattr(distill_module, "make_pairs", lambda *a, **k: calls.append(1) or real(*a, **k))
    resumed = _take(pair_stream(tiny_G, head, cfg)(5), 3)  # a resumed run renders the pool again, then continues
    assert len(calls) == 2
    for (xa, ya), (xb, yb) in zip(resumed, pooled[5:], strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    with pytest.raises(ValueError, match="pool must be >= 0"):
        DistillConfig(pool=-1)


def test_crop_trains_on_windows_and_the_model_still_segments_whole_images(tiny_G, tmp_path):
    head = _head(tiny_G, tmp_path)
    cfg = DistillConfig(steps=40, batch=4, lr=5e-3, channels=[8, 16], confidence=0.0, crop=16, val_every=0)
    x, y = next(pair_stream(tiny_G, head, cfg)(0))
    assert x.shape == (4, 3, 16, 16) and y.shape == (4, 16, 16)  # 32 px pairs, 16 px windows
    plain = next(pair_stream(tiny_G, head, replace(cfg, augment=False))(0))[0]
    assert plain.shape == (4, 3, 16, 16)  # without augmentation too
    model, _ = distill(tiny_G, head, cfg, tmp_path / "crop", progress=False)
    torch.manual_seed(cfg.seed)  # the same network as distill() builds, before any step
    init = UNet(UNetConfig(num_classes=len(head.labels), channels=cfg.channels))
    xs, ys = make_pairs(tiny_G, head, 8, torch.Generator().manual_seed(99))
    wx, wy = next(pair_stream(tiny_G, head, cfg)(cfg.steps))  # windows it has not trained on
    model.eval(), init.eval()
    with torch.no_grad():
        assert model(xs).shape == (8, 2, 32, 32)  # trained on 16 px windows, it segments whole 32 px images
        after, before = segmentation_loss(model(wx), wy), segmentation_loss(init(wx), wy)
    # it learnt from the windows: on fresh ones its loss falls well below the untrained network's. (No whole-image
    # accuracy bar: these toy labels, brightness against the image's own mean, need context a 16 px window lacks;
    # the crop's effect on real masks is measured in BENCHMARKS.md, "Demo on builtin:faces128".)
    assert after < before - 0.02
    with pytest.raises(ValueError, match="crop must be 0"):
        DistillConfig(crop=8)
    with pytest.raises(ValueError, match="crop 48 is larger than the generator's 32 px images"):
        distill(tiny_G, head, replace(cfg, crop=48), tmp_path / "too_big", progress=False)
    assert not (tmp_path / "too_big").exists()  # refused before anything was written


def test_class_weights_come_from_a_fixed_probe_and_weight_the_loss(tiny_G, tmp_path):
    head = _head(tiny_G, tmp_path)
    cfg = DistillConfig(confidence=0.0, class_weights="inverse")
    w = probe_class_weights(tiny_G, head, cfg, n=8)
    assert w == probe_class_weights(tiny_G, head, cfg, n=8)  # the same probe every time (a resume agrees)
    _, y = make_pairs(tiny_G, head, 8, torch.Generator().manual_seed(999_983))  # the probe's own pairs (seed 0)
    inv = 1 / torch.bincount(y.flatten(), minlength=2).double()
    assert torch.allclose(torch.tensor(w, dtype=torch.double), inv / inv.mean(), atol=1e-5)  # inverse frequency
    assert probe_class_weights(tiny_G, head, replace(cfg, class_weights="none")) is None
    logits, target = torch.randn(2, 2, 4, 4), torch.randint(0, 2, (2, 4, 4))
    plain = segmentation_loss(logits, target)
    assert not torch.isclose(segmentation_loss(logits, target, weight=torch.tensor([0.1, 1.9])), plain)
    with pytest.raises(ValueError, match="class_weights must be one of"):
        DistillConfig(class_weights="focal")


def test_pair_cache_refuses_other_settings_and_other_folders(tiny_G, tmp_path):
    head = _head(tiny_G, tmp_path)
    cfg = DistillConfig(batch=2)
    pair_stream(tiny_G, head, cfg, cache=tmp_path / "cache")
    with pytest.raises(ValueError, match=r"other settings \(seed: cache has 0, this run 1\)"):
        pair_stream(tiny_G, head, replace(cfg, seed=1), cache=tmp_path / "cache")
    with pytest.raises(ValueError, match="pairs_per_process: cache has 2, this run 1"):
        pair_stream(tiny_G, head, cfg, world=2, cache=tmp_path / "cache")
    write_image(tmp_path / "data" / "images" / "x.png", torch.zeros(4, 4, 3, dtype=torch.uint8).numpy())
    with pytest.raises(ValueError, match="not a pair cache"):
        pair_stream(tiny_G, head, cfg, cache=tmp_path / "data")
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        pair_stream(tiny_G, head, DistillConfig(batch=3), world=2)


DDP_CFG = DistillConfig(steps=4, batch=4, lr=5e-3, channels=[4, 8], confidence=0.5, val_every=0, ckpt_every=4)


def _ddp_worker(rank: int, world: int, root: str) -> None:
    """One of `world` gloo processes: an uninterrupted run, and one stopped at step 2 and resumed, both cached."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{root}/pg", rank=rank, world_size=world)
    try:
        root = Path(root)
        G = load_generator(root / "G.safetensors")
        head = FewShotHead.load(root / "head.safetensors", G)
        calls = []

        def validate(model):
            calls.append(rank)
            return 0.5

        full, _ = distill(G, head, DDP_CFG, root / "full", progress=False, validate=validate, cache=root / "cache")
        distill(G, head, DDP_CFG, root / "resumed", progress=False, stop_at_step=2, cache=root / "cache")
        resumed, res = distill(G, head, DDP_CFG, root / "resumed", progress=False, cache=root / "cache")
        torch.save({"full": full.state_dict(), "resumed": resumed.state_dict(), "start": res["start_step"],
                    "world": res["world"], "val_calls": len(calls)}, root / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_gloo_processes_stay_in_sync_and_resume(tiny_G, tmp_path):
    head = _head(tiny_G, tmp_path)
    save_generator(tiny_G, tmp_path / "G.safetensors")
    head.save(tmp_path / "head.safetensors")
    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["start"] == r1["start"] == 2
    for k, v in r0["full"].items():  # parameters and BatchNorm buffers: identical replicas, exact resume
        assert all(torch.equal(v, other[k]) for other in (r1["full"], r0["resumed"], r1["resumed"])), k
    assert r0["val_calls"] == 1 and r1["val_calls"] == 0  # rank 0 alone validates
    for run, steps in (("full", [4]), ("resumed", [2, 4])):
        log = [json.loads(ln) for ln in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        syncs = [r for r in log if r.get("event") == "ddp_sync"]
        assert [r["step"] for r in syncs] == steps and all(r["world"] == 2 and r["max_param_diff"] == 0
                                                          for r in syncs)
        assert torch.load(tmp_path / run / "checkpoint.pt", weights_only=True)["step"] == 4
    assert not list((tmp_path / "full").glob(".*"))  # no leftovers of concurrent writes
    # each process made batch / 2 pairs per step from its own seed stream
    names = sorted(p.stem for p in (tmp_path / "cache" / "masks").iterdir())
    assert names == [f"rank{r:02d}_step{s:07d}_{i:03d}" for r in (0, 1) for s in range(4) for i in range(2)]
    img = tmp_path / "cache" / "images"
    assert (img / "rank00_step0000000_000.png").read_bytes() != (img / "rank01_step0000000_000.png").read_bytes()


def test_cli_distill_with_cache(tiny_G, tmp_path):
    head = _head(tiny_G, tmp_path)
    save_generator(tiny_G, tmp_path / "G.safetensors")
    head.save(tmp_path / "head.safetensors")
    args = ["distill", "--head", str(tmp_path / "head.safetensors"), "--gan", str(tmp_path / "G.safetensors"),
            "--out", str(tmp_path / "run"), "--steps", "2", "--batch", "2", "--cache", str(tmp_path / "cache"),
            "--device", "cpu"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "distilled 2 steps on 1 process(es)" in r.output
    assert len(list((tmp_path / "cache" / "masks").glob("*.png"))) == 4
    r = CliRunner().invoke(app, [*args[:-4], "--steps", "3", *args[-4:]])  # a longer schedule resumes
    assert r.exit_code == 0, r.output
    assert "distilled 3 steps on 1 process(es) (resumed at step 2)" in r.output


def test_torchrun_cli_distill_on_two_gloo_processes(tiny_G, tmp_path):
    head = _head(tiny_G, tmp_path)
    save_generator(tiny_G, tmp_path / "G.safetensors")
    head.save(tmp_path / "head.safetensors")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "partseg.cli", "distill", "--head", str(tmp_path / "head.safetensors"), "--gan",
                          str(tmp_path / "G.safetensors"), "--out", str(tmp_path / "run"), "--steps", "3", "--batch",
                          "4", "--ckpt-every", "3", "--device", "cpu"], env=env, capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (res.stdout + res.stderr).count("distilled 3 steps on 2 process(es)") == 1  # rank 0 alone reports
    log = [json.loads(ln) for ln in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r for r in log if r.get("event") == "ddp_sync"] == [{"step": 3, "event": "ddp_sync", "world": 2,
                                                                 "max_param_diff": 0.0}]
