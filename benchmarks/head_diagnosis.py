"""Why the demo's head misses small parts on builtin:faces128: the paper's CNN head at a few step counts,
with and without per-channel feature standardisation and sqrt inverse-frequency class weights (issue #14 -> #15).

    python3 benchmarks/head_diagnosis.py

Trains the CNN head on the 10 default shots of builtin:faces128 (one shot per step, mirrored at random, Adam with
a cosine schedule, bf16 autocast) and scores it against the aligned label oracle on 16 generated samples (seed 1).
Prints one line per recipe; writes nothing. A diagnostic, not the benchmark of #15.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from partseg.eval.metrics import ScoreAccumulator  # noqa: E402
from partseg.eval.oracle import ALIGNED_ORACLE, load_oracle, predict_labels  # noqa: E402
from partseg.features import pixel_features  # noqa: E402
from partseg.fewshot.heads import CNNHead, HeadConfig  # noqa: E402
from partseg.fewshot.learner import FewShotConfig, load_shots, shot_features  # noqa: E402
from partseg.gan import load_generator  # noqa: E402
from partseg.gan.checkpoints import builtin_annotations  # noqa: E402
from partseg.gan.interface import as_fewshot_gan  # noqa: E402
from partseg.labels import FACES, IGNORE  # noqa: E402

RECIPES = [  # (standardise, steps, lr, class weights)
    (False, 300, 1e-3, False), (True, 300, 3e-3, False), (True, 300, 3e-3, True),
    (True, 1000, 3e-3, False), (True, 1000, 3e-3, True),
]


def main() -> None:
    G = load_generator("builtin:faces128")
    fg = as_fewshot_gan(G)
    shots = load_shots(builtin_annotations("faces128"))
    feats, layers = shot_features(G, shots, FewShotConfig())
    mean, std = feats.mean((0, 2, 3), keepdim=True), feats.std((0, 2, 3), keepdim=True) + 1e-5
    ws = fg.latents_from_z(fg.random_z(16, torch.Generator().manual_seed(1)), 1.0)
    with torch.no_grad():
        img, test = pixel_features(fg.source(layers, noise_mode="const"), ws, size=feats.shape[-1])
    truth, _ = predict_labels(load_oracle(ALIGNED_ORACLE), img)
    masks = shots.masks
    count = torch.bincount(masks[masks != IGNORE].flatten(), minlength=len(FACES)).float()
    weights = (count.sum() / (count + 1)) ** 0.5
    weights = weights / weights.mean()
    print(f"feature std per channel: median {float(std.median()):.3f}; test: 16 samples of seed 1 vs the oracle")
    for norm, steps, lr, weighted in RECIPES:
        torch.manual_seed(0)
        head = CNNHead(HeadConfig(kind="cnn", in_channels=feats.shape[1], num_classes=len(FACES)))
        opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=1e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.05)
        x_all = (feats - mean) / std if norm else feats
        gen, t0 = torch.Generator().manual_seed(0), time.time()
        for _ in range(steps):
            i = int(torch.randint(len(x_all), (1,), generator=gen))
            x, y = x_all[i:i + 1], masks[i:i + 1]
            if torch.rand((), generator=gen) < 0.5:
                x, y = x.flip(-1), y.flip(-1)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = head(x)
            loss = F.cross_entropy(out.float(), y, weight=weights if weighted else None, ignore_index=IGNORE)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        seconds = time.time() - t0
        with torch.no_grad():
            pred = head((test - mean) / std if norm else test).argmax(1)
        acc = ScoreAccumulator(len(FACES))
        acc.add(pred, truth)
        sc = acc.scores()
        per = " ".join(f"{n}:{v:.2f}" for n, v in zip(FACES.names, sc.iou.tolist(), strict=True))
        print(f"standardise={norm} steps={steps} lr={lr} class-weights={weighted}: {seconds:.0f} s, "
              f"mIoU {sc.miou:.3f} | {per}", flush=True)


if __name__ == "__main__":
    main()
