"""How many auto-shot steps the demo's UNet needs (issue #14): distillation variants on one head and one pair pool.

    python3 benchmarks/demo_distill.py [--variants base,steps600,...] [--gan builtin:faces128] [--threads 2]

Trains the default head on the generator's default shots, then, for each variant, distils a UNet with a pair pool
(the demo's way; the pool is cached in runs/demo_distill/ so every variant with the same batch sees the same pairs)
and scores it on 48 aligned and 48 wild renders with exact masks. Prints one JSON line per variant; the figures
are quoted in BENCHMARKS.md "Demo on builtin:faces128".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from partseg.distill.autoshot import DistillConfig, distill  # noqa: E402
from partseg.eval.oracle import evaluate_on_renders  # noqa: E402
from partseg.fewshot.learner import FewShotConfig, load_shots, train_head  # noqa: E402
from partseg.gan import load_generator  # noqa: E402
from partseg.gan.checkpoints import builtin_annotations  # noqa: E402

WORK = ROOT / "runs" / "demo_distill"
VARIANTS = {  # each on top of the demo's defaults (480 steps of 16 from a pool of 192)
    "base": {}, "lr5e-3": {"lr": 5e-3}, "dice1": {"dice_weight": 1.0}, "steps600": {"steps": 600},
    "b8s960": {"batch": 8, "steps": 960},
    # random windows of the augmented pairs: about the same UNet time as the base ((128 / C)^2 as many steps)
    "crop96": {"crop": 96, "steps": 850}, "crop64": {"crop": 64, "steps": 1920},
    "cw_sqrt": {"class_weights": "sqrt"}, "cw_inverse": {"class_weights": "inverse"},
    "crop64_cw_sqrt": {"crop": 64, "steps": 1920, "class_weights": "sqrt"},
    "crop64_cw_inverse": {"crop": 64, "steps": 1920, "class_weights": "inverse"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gan", default="builtin:faces128")
    ap.add_argument("--variants", default="base,crop96,crop64")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    G = load_generator(args.gan)
    head = train_head(G, load_shots(builtin_annotations(args.gan.removeprefix("builtin:"))), FewShotConfig(seed=0),
                      progress=False)
    for name in args.variants.split(","):
        kw = {"steps": 480, "batch": 16, "pool": 192, "seed": 0, "val_every": 0, **VARIANTS[name]}
        t = time.time()
        model, _ = distill(G, head, DistillConfig(**kw), WORK / name, progress=False,
                           cache=WORK / f"pairs-b{kw['batch']}-p{kw['pool']}")
        sec = time.time() - t
        model.eval()
        a = evaluate_on_renders(model, n=48, size=G.resolution, seed0=9_000_000, mode="aligned")
        w = evaluate_on_renders(model, n=48, size=G.resolution, seed0=9_500_000, mode="wild")
        print(json.dumps({"variant": name, "config": kw, "seconds": round(sec), "aligned": round(a.miou, 3),
                          "wild": round(w.miou, 3), "aligned_iou": [round(float(x), 2) for x in a.iou]}), flush=True)


if __name__ == "__main__":
    main()
