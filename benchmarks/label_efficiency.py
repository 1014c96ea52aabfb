"""Label efficiency, second edition (issue #15): k-shot heads and the auto-shot UNet against converged supervised UNets.

    python3 benchmarks/label_efficiency.py [--quick] [--part all|fewshot|supervised]
                                           [--sup-seeds 1,2 --no-convergence --convergence-first --device cuda]

World: `builtin:faces128` and its aligned renders. Three test sets, each reported:
  (a) generated samples (no truncation, seeds 900000+) labelled by the aligned label oracle: the heads directly,
      without inversion (the oracle's mean max-softmax on them is reported next to it);
  (b) aligned renders with exact masks (seeds 9,000,000+): heads through GAN inversion (inverted once, cached),
      UNets directly;
  (c) unaligned "wild" renders at 128 px with exact masks: the auto-shot UNet against the supervised UNets.
Few-shot: k = 1, 5, 10 generated samples (truncation 0.7, like the default annotation set) labelled by the oracle
(standing in for a person), the default head recipe (`FewShotConfig()`), 3 seeds (other shots). Auto-shot: the UNet
distilled from the 10-shot head of seed 0 (3000 steps; 2048 pairs rendered once, then re-augmented). Supervised: a
UNet ([16, 32, 64, 128], the distillation's network and augmentation) on N aligned renders with exact masks,
N = 1 .. 2000, 3 seeds (other images); steps grow with N
(`sup_steps`), the checkpoint with the best mIoU on 50 validation renders is kept, and for N = 10 and 200 a run with
twice the steps checks that more steps do not help. Every finished entry is cached in benchmarks/results/
(committed: the benchmark spans sessions and machines; run folders stay in runs/label_efficiency2/), so an
interrupted run resumes; the GAN side's cache is keyed by the generator, the oracle and the head recipe. Writes
the `label_efficiency2` section of BENCHMARKS.md and docs/label_efficiency2.png (the paper's Fig. 6). The first
edition (faces64, under-trained supervised baselines) is `git show 0a6cdcf:benchmarks/label_efficiency.py`.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from label_efficiency_report import autoshot_key, conv_key, write_report  # noqa: E402

from partseg.atomic import atomic_torch_save, atomic_write_text  # noqa: E402
from partseg.data.faces import render_face  # noqa: E402
from partseg.distill.augment import AugmentConfig, augment_pair  # noqa: E402
from partseg.distill.autoshot import DistillConfig, distill  # noqa: E402
from partseg.distill.trainer import SegTrainConfig, fit_segmenter  # noqa: E402
from partseg.distill.unet import UNet, UNetConfig  # noqa: E402
from partseg.eval.metrics import ScoreAccumulator  # noqa: E402
from partseg.eval.oracle import ALIGNED_ORACLE, ORACLE_EVAL_SEED0, load_oracle, predict_labels, to_input  # noqa: E402
from partseg.fewshot.invert import InversionConfig, invert  # noqa: E402
from partseg.fewshot.learner import FewShotConfig, FewShotHead, Shots, recipe_dict, train_head  # noqa: E402
from partseg.gan import load_generator  # noqa: E402
from partseg.gan.checkpoints import builtin_path  # noqa: E402
from partseg.gan.sampling import sample  # noqa: E402
from partseg.labels import FACES  # noqa: E402

GAN, SIZE = "faces128", 128
WORK = ROOT / "runs" / "label_efficiency2"
SUP_SEED0, VAL_SEED0, WILD_SEED0 = 3_000_000, 8_000_000, 9_500_000
SHOT_SEED0, GEN_TEST_SEED0 = 500_000, 900_000
SUP_N, SHOTS_K, CONVERGENCE_N = [1, 2, 5, 10, 20, 50, 100, 200, 500, 2000], [1, 5, 10], [1, 2, 5, 10, 20, 200]
AUTOSHOT = {  # auto-shot recipes distilled from the 10-shot head; steps: steps_x times --distill-steps
    "": {"crop": 0, "class_weights": "none", "steps_x": 1},  # whole augmented images, plain cross-entropy
    "crop64-sqrt": {"crop": 64, "class_weights": "sqrt", "steps_x": 4},  # the demo's: 64 px windows, the same pixels
}


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()[:12]


FEWSHOT = WORK / ("fewshot-" + _digest(builtin_path(GAN).read_bytes(), ALIGNED_ORACLE.read_bytes(),
                                       json.dumps(recipe_dict(FewShotConfig()), sort_keys=True).encode()))
INVERSIONS = WORK / ("inversions-" + _digest(builtin_path(GAN).read_bytes()))


def sup_steps(n: int, scale: float = 1.0) -> int:
    """Steps of a supervised run: more images need more steps to be seen (1000 for N=1, 6000 from N~90 up)."""
    return int(scale * min(6000, max(1000, round(1000 * n ** 0.4))))


def renders(seed0: int, n: int, mode: str, cache: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """n renders from seed0 on; cache=True keeps them (uint8) in WORK, so parallel processes render a test set once."""
    path = WORK / f"renders-{mode}-{SIZE}-{seed0}-{n}.pt"
    if cache and path.exists():
        d = torch.load(path, weights_only=True)
        imgs, masks = d["images"].numpy(), d["masks"].numpy()
    else:
        imgs, masks = (np.stack(a) for a in zip(*(render_face(s, SIZE, mode) for s in range(seed0, seed0 + n)),
                                                 strict=True))
        if cache:
            atomic_torch_save({"images": torch.from_numpy(imgs), "masks": torch.from_numpy(masks)}, path)
    return to_input(imgs), torch.from_numpy(masks).long()


def scores(pred: torch.Tensor, truth: torch.Tensor) -> dict:
    acc = ScoreAccumulator(len(FACES))
    acc.add(pred, truth)
    s = acc.scores()
    return {"miou": s.miou, "iou": [None if math.isnan(v) else v for v in s.iou.tolist()]}


def unet_scores(model: UNet, test: tuple[torch.Tensor, torch.Tensor]) -> dict:
    model.eval()
    dev = next(model.parameters()).device
    with torch.no_grad():
        pred = torch.cat([model(test[0][i:i + 32].to(dev)).argmax(1).cpu() for i in range(0, len(test[0]), 32)])
    return scores(pred, test[1])


def supervised_batches(n: int, seed: int, batch: int = 16, device: str = "cpu"):
    """N fixed aligned renders, augmented as distillation augments its pairs (flip, scale, rotation, shift, colour).
    The images live on `device` and are augmented there (the draws come from the same CPU generator either way)."""
    x_all, y_all = (t.to(device) for t in renders(SUP_SEED0 + 10_000 * seed, n, "aligned"))

    def make(start: int):
        step = start
        while True:
            g = torch.Generator().manual_seed(seed * 7919 + step)
            idx = torch.randint(n, (batch,), generator=g).to(device)
            yield augment_pair(x_all[idx], y_all[idx], AugmentConfig(), g)
            step += 1

    return make


def logged_seconds(run: Path, wall: float) -> float:
    """Training seconds summed from the run's log, which survives resumes (a wall clock around the call counts
    only the last part of a resumed run); the wall clock where the log has no timing."""
    prev, total = 0, 0.0
    log = run / "log.jsonl"
    for line in log.read_text().splitlines() if log.exists() else []:
        r = json.loads(line)
        if "sec_per_step" in r:
            total, prev = total + r["sec_per_step"] * (r["step"] - prev), r["step"]
    return total if total > 0 else wall


def fit_supervised(batches, run: Path, steps: int, seed: int, validate, device: str = "cpu") -> UNet:
    """The supervised baselines' UNet and schedule: batches(start) -> augmented pairs, validation-best weights.
    Exits (the checkpoint written, nothing recorded) when the run is stopped, so a re-run resumes it."""
    torch.manual_seed(seed)
    model = UNet(UNetConfig(num_classes=len(FACES), channels=[16, 32, 64, 128]))
    cfg = SegTrainConfig(steps=steps, lr=2e-3, warmup=min(100, steps // 10), ckpt_every=max(1, steps // 10),
                         log_every=100, seed=seed)
    res = fit_segmenter(model, batches, cfg, run, progress=False, device=device, validate=validate,
                        val_every=max(1, steps // 10))
    if res["stopped_early"]:  # Ctrl-C / SIGTERM: the checkpoint is written; record nothing, resume next time
        sys.exit(f"{run.name} stopped at step {res['step']} of {steps}; run again to resume")
    best = run / "best.safetensors"
    if best.exists():
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(best)))
    return model.to(device)


def run_supervised(n: int, seed: int, steps: int, tests: dict, val: tuple, device: str = "cpu") -> dict:
    run, t = WORK / f"sup_{n}_{seed}_{steps}", time.time()
    model = fit_supervised(supervised_batches(n, seed, device=device), run, steps, seed,
                           lambda m: unet_scores(m, val)["miou"], device)
    return {"steps": steps, "device": torch.device(device).type,
            "train_seconds": round(logged_seconds(run, time.time() - t), 1),
            **{name: unet_scores(model, test) for name, test in tests.items() if name != "generated"}}


def oracle_shots(G, oracle, k: int, seed0: int, truncation: float = 0.7) -> Shots:
    """k generated samples (seeds seed0..) labelled by the oracle, standing in for a person's annotations."""
    s = sample(G, k, seed=seed0, truncation=truncation)
    labels, _ = predict_labels(oracle, s.images)
    return Shots([f"seed{x}" for x in s.seeds], s.ws, s.seeds, s.noise_mode, labels, FACES)


def cached_inversions(G, images: torch.Tensor, steps: int, batch: int = 25) -> list[dict]:
    out = []
    for i in range(0, len(images), batch):
        path = INVERSIONS / f"inversion_{steps}_{i:05d}.pt"
        if not path.exists():
            t = time.time()
            inv = invert(G, images[i:i + batch], InversionConfig(steps=steps))
            atomic_torch_save({"ws": inv.ws, "noise": inv.noise, "psnr": inv.psnr, "seconds": time.time() - t}, path)
            print(f"  inverted test images {i}..{i + len(inv.ws) - 1}: PSNR {inv.psnr.mean():.1f} dB", flush=True)
        out.append(torch.load(path, weights_only=True))
    return out


def head_scores(G, head: FewShotHead, gen: dict, inv: list[dict], aligned: tuple) -> dict:
    pred = torch.cat([head.predict_ws(G, gen["ws"][i:i + 8])[1].argmax(1) for i in range(0, len(gen["ws"]), 8)])
    out = {"generated": scores(pred, gen["labels"])}
    pred = torch.cat([head.predict_ws(G, r["ws"], noise=r["noise"])[1].argmax(1) for r in inv])
    out["aligned"] = scores(pred, aligned[1][:len(pred)])
    out["train_seconds"] = head.meta["train_seconds"]
    return out


def run_fewshot_side(args, tests: dict, record) -> None:
    G = load_generator(f"builtin:{GAN}")
    oracle = load_oracle(ALIGNED_ORACLE)
    inv = cached_inversions(G, tests["aligned"][0][:args.n_invert], args.inversion_steps)
    heads: dict[tuple[int, int], FewShotHead] = {}
    for k in args.shots_k:
        for seed in range(args.seeds):
            path = FEWSHOT / "heads" / f"{k}_{seed}.safetensors"

            def fit(k=k, seed=seed, path=path):
                shots = oracle_shots(G, oracle, k, SHOT_SEED0 + 1000 * seed)
                head = train_head(G, shots, FewShotConfig(seed=seed, steps=args.head_steps), progress=False)
                head.save(path)
                return head_scores(G, head, tests["generated"], inv, tests["aligned"])

            record(f"fewshot/{k}/{seed}", fit)
            heads[k, seed] = FewShotHead.load(path, G)
    k10 = max(args.shots_k)

    for name, recipe in AUTOSHOT.items():
        steps = args.distill_steps * recipe["steps_x"]

        def autoshot(recipe=recipe, steps=steps, folder=FEWSHOT / ("autoshot" + (f"-{name}" if name else ""))):
            t = time.time()
            cfg = DistillConfig(steps=steps, pool=args.distill_pool, seed=0, val_every=0, crop=recipe["crop"],
                                class_weights=recipe["class_weights"])
            model, res = distill(G, heads[k10, 0], cfg, folder, progress=True,
                                 cache=FEWSHOT / f"pairs-b{cfg.batch}-p{cfg.pool}")
            if res["stopped_early"]:
                sys.exit(f"auto-shot distillation stopped at step {res['step']}; run again to resume")
            return {"train_seconds": round(time.time() - t, 1), "steps": steps, "pool": args.distill_pool,
                    "crop": recipe["crop"], "class_weights": recipe["class_weights"],
                    "aligned": unet_scores(model, tests["aligned"]),
                    "wild": unet_scores(model, tests["wild"])}

        record(autoshot_key(name, k10), autoshot)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small smoke run in runs/label_efficiency2/quick "
                    "(no BENCHMARKS.md update)")
    ap.add_argument("--part", choices=["all", "fewshot", "supervised"], default="all")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--n-generated", type=int, default=100)
    ap.add_argument("--n-invert", type=int, default=100)
    ap.add_argument("--inversion-steps", type=int, default=200)
    ap.add_argument("--distill-steps", type=int, default=3000)
    ap.add_argument("--distill-pool", type=int, default=2048, help="generated pairs rendered once, then reused with "
                    "fresh augmentation (0: fresh pairs every step, about 3 h on one core)")
    ap.add_argument("--sup-seeds", default=None, help="supervised side: only these seeds, e.g. 2 or 1,2 (another "
                    "process may take the others: the result files are merged under a lock)")
    ap.add_argument("--sup-n", dest="only_n", default=None, help="supervised side: only these N, e.g. 50 or "
                    "5,10,20 (and only their convergence runs); writes no report")
    ap.add_argument("--prepare", action="store_true", help="only render and cache the test sets (before starting "
                    "parallel processes), then exit")
    ap.add_argument("--no-convergence", action="store_true", help="supervised side: skip the 2x-steps runs")
    ap.add_argument("--convergence-first", action="store_true", help="supervised side: the 2x-steps runs first")
    ap.add_argument("--conv-seeds", default="0", help="supervised side: seeds of the 2x-steps runs, e.g. 1,2 "
                    "(default 0; the report shows the mean gain over the seeds that have both schedules)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="supervised UNets' device (default: cuda where present)")
    args = ap.parse_args()
    args.sup_n, args.shots_k, args.head_steps, scale = SUP_N, SHOTS_K, 0, 1.0
    global WORK, FEWSHOT, INVERSIONS
    if args.quick:
        WORK, FEWSHOT, INVERSIONS = (WORK / "quick", WORK / "quick" / FEWSHOT.name, WORK / "quick" / INVERSIONS.name)
        args.seeds, args.n_test, args.n_generated, args.n_invert, args.inversion_steps = 1, 8, 8, 4, 5
        args.distill_steps, args.sup_n, args.shots_k, args.head_steps, scale = 3, [1, 2], [1, 2], 20, 0.005
        args.distill_pool = 0
    for d in (WORK, FEWSHOT, INVERSIONS):
        d.mkdir(parents=True, exist_ok=True)
    # results (not run folders) live in the tree, so a benchmark spread over sessions survives a new machine
    results_dir = WORK / "results" if args.quick else ROOT / "benchmarks" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    caches = {"supervised": results_dir / "label_efficiency2_supervised.json",
              "fewshot": results_dir / f"label_efficiency2_{FEWSHOT.name}.json"}

    def load() -> dict:
        return {k: v for c in caches.values() if c.exists() for k, v in json.loads(c.read_text()).items()}

    results = load()

    def record(key: str, fn) -> None:
        if key in results or key in load():  # done here, or meanwhile by another process (--sup-seeds)
            results.update(load())
            return
        res = fn()
        cache = caches["supervised" if key.startswith(("supervised/", "convergence/")) else "fewshot"]
        with open(cache.with_suffix(".lock"), "w") as lock:  # read-merge-write: parallel processes lose nothing
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = json.loads(cache.read_text()) if cache.exists() else {}
            entries[key] = res
            atomic_write_text(json.dumps(entries, indent=1), cache)
        results[key] = res
        print(f"{key}: {json.dumps({k: v['miou'] if isinstance(v, dict) else v for k, v in res.items()})}", flush=True)

    if args.only_n:
        args.sup_n = [int(x) for x in args.only_n.split(",")]
        if not set(args.sup_n) <= set(SUP_N):
            sys.exit(f"--sup-n: expected some of {SUP_N}, got {args.only_n}")
    tests = {"aligned": renders(ORACLE_EVAL_SEED0, args.n_test, "aligned", cache=True),
             "wild": renders(WILD_SEED0, args.n_test, "wild", cache=True)}
    val = renders(VAL_SEED0, 50 if not args.quick else 4, "aligned", cache=True)
    if args.prepare:
        print(f"test sets cached in {WORK}")
        return
    if args.part in ("all", "fewshot"):
        G = load_generator(f"builtin:{GAN}")
        s = sample(G, args.n_generated, seed=GEN_TEST_SEED0)
        labels, conf = predict_labels(load_oracle(ALIGNED_ORACLE), s.images)
        tests["generated"] = {"ws": s.ws, "labels": labels}
        record("oracle_confidence", lambda: {"value": float(conf.mean())})
        run_fewshot_side(args, tests, record)
    if args.part in ("all", "supervised"):
        seeds = [int(x) for x in args.sup_seeds.split(",")] if args.sup_seeds else range(args.seeds)

        def convergence() -> None:
            for n in [n for n in CONVERGENCE_N if n in args.sup_n] if not (args.quick or args.no_convergence) else []:
                for s in [int(x) for x in args.conv_seeds.split(",")]:
                    record(conv_key(n, s), lambda n=n, s=s: run_supervised(n, s, sup_steps(n, 2), tests, val,
                                                                           args.device))

        if args.convergence_first:
            convergence()
        for seed in seeds:  # seed 0 of every N first: a whole (if noisy) curve early
            for n in args.sup_n:
                record(f"supervised/{n}/{seed}", lambda n=n, seed=seed: run_supervised(
                    n, seed, max(2, int(sup_steps(n) * scale)), tests, val, args.device))
        convergence()
    results = load()
    needed = [f"supervised/{n}/{s}" for n in args.sup_n for s in range(args.seeds)]
    needed += [f"fewshot/{k}/{s}" for k in args.shots_k for s in range(args.seeds)]
    needed += [autoshot_key(name, max(args.shots_k)) for name in AUTOSHOT]
    needed += [f"convergence/{n}" for n in CONVERGENCE_N if not args.quick]
    missing = [k for k in needed if k not in results]
    if args.only_n and not args.quick:
        print(f"partial run (--sup-n): {len(missing)} entries missing; no report written")
        return
    if args.quick:
        print(f"quick run: {len(missing)} entries missing (no report written)")
        if missing:
            sys.exit(1)
        return
    write_report(results, args, missing, gan=GAN, convergence_n=CONVERGENCE_N, autoshot=AUTOSHOT)


if __name__ == "__main__":
    main()
