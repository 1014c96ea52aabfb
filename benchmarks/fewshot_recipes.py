"""Few-shot recipes on builtin:faces128 (issue #15): which head, loss and schedule the learner should use.

    python3 benchmarks/fewshot_recipes.py [--threads N] [--n-test 24] [--round 2 | --round 3|4 --shots 1,5,10]

Every recipe is trained by the shipped `train_head` (so the table measures the library, not a copy of it) on the
10 default shots of builtin:faces128 (or the first one), and scored on test set (a) of issue #15: generated samples
without truncation (seeds 900000+), labelled by the aligned label oracle. The oracle's own mean max-softmax on those
samples is printed next to the table: it bounds how far its labels can be trusted. Two further rows probe the
ceiling: the default recipe on 60 oracle-labelled generated samples instead of 10, and style mixing as shot
augmentation (the oracle's labels of a shot whose fine styles come from random latents, against the shot's mask: a
mask only carries over if layout survives the mixing). Writes the "fewshot_recipes" section of BENCHMARKS.md.

--round 2 (section "fewshot_recipes2"): the default recipe with other feature layers, and on oracle-labelled shots
drawn at truncation 0.7 (as the default annotation set) against 1.0 (as the test samples), two seed sets each.

--round 3 (section "fewshot_recipes3"; use --n-test 100): the default MLP against the paper's CNN at 1, 5 and 10
shots on the shot sets and test set (a) of `label_efficiency.py`, 3 shot sets each: whether the head should depend
on the number of shots (the CNN led at 1 shot in round 1 and on the DCGAN).

--round 4 (section "fewshot_recipes4"; use --n-test 100): as round 3, the default MLP against the same MLP trained
with the focal loss (gamma 2), the default since. Rounds 1-3 trained with cross-entropy and keep it
(`CROSS_ENTROPY`), so their cached rows still match and their "default" means the default of their time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from label_efficiency import SHOT_SEED0, oracle_shots  # noqa: E402
from report import machine, utc_now, write_section  # noqa: E402

from partseg.atomic import atomic_write_text  # noqa: E402
from partseg.eval.metrics import ScoreAccumulator  # noqa: E402
from partseg.eval.oracle import ALIGNED_ORACLE, load_oracle, predict_labels  # noqa: E402
from partseg.fewshot.learner import FewShotConfig, Shots, load_shots, recipe_dict, train_head  # noqa: E402
from partseg.fewshot.shots import shots_digest  # noqa: E402
from partseg.gan import load_generator  # noqa: E402
from partseg.gan.checkpoints import builtin_annotations, builtin_path  # noqa: E402
from partseg.gan.sampling import sample  # noqa: E402
from partseg.gan.sources import default_layers  # noqa: E402
from partseg.labels import FACES  # noqa: E402

# the loss every round before round 4 trained with: rows leave it out, so the default's change does not move them
CROSS_ENTROPY = dict(focal_gamma=0.0)
TEST_SEED = 900_000
CEILING_SEED = 700_000
# (name, shots, FewShotConfig overrides): the old default first, the new default marked in the report
RECIPES = [
    ("paper CNN, 600 steps, no class weights (the default before #15)", 10,
     dict(head="cnn", steps=600, class_weights="none")),
    ("CNN, 600 steps, inverse-frequency class weights", 10, dict(head="cnn", steps=600)),
    ("CNN on 64 px features, 2000 steps, inverse weights", 10, dict(head="cnn", steps=2000, size=64)),
    ("MLP, 2000 steps of 4096 pixels, no class weights", 10, dict(class_weights="none", pixels_per_step=4096)),
    ("MLP, 2000 steps of 4096 pixels, sqrt class weights", 10, dict(class_weights="sqrt", pixels_per_step=4096)),
    ("MLP, 2000 steps of 4096 pixels, inverse class weights", 10, dict(pixels_per_step=4096)),
    ("MLP, 1000 steps of 4096 pixels", 10, dict(steps=1000, pixels_per_step=4096)),
    ("MLP, 4000 steps of 4096 pixels", 10, dict(steps=4000, pixels_per_step=4096)),
    ("MLP, 2000 steps of 8192 pixels", 10, dict(pixels_per_step=8192)),
    ("MLP, 2000 steps of 2048 pixels, inverse class weights (default of rounds 1-3)", 10, {}),
    ("MLP ensemble of 3 (2000 steps of 4096 pixels each)", 10, dict(ensemble=3, pixels_per_step=4096)),
    ("MLP, 2000 steps of 4096 pixels, float32 (no bf16 autocast)", 10, dict(amp="off", pixels_per_step=4096)),
    ("1 shot: MLP, 2000 steps of 4096 pixels", 1, dict(pixels_per_step=4096)),
    ("1 shot: MLP, default recipe", 1, {}),
    ("1 shot: paper CNN, 600 steps, no class weights", 1, dict(head="cnn", steps=600, class_weights="none")),
]

# round 2: (name, shots: "default" or (truncation, first seed), FewShotConfig overrides)
RECIPES2 = [
    ("default recipe, default shots", "default", {}),
    ("default recipe, every conv layer (b4.conv1 too)", "default", dict(layers="all")),
    ("default recipe, paper layers + each block's ToRGB output", "default", dict(layers="paper+torgb")),
    ("default recipe, 32-128 px layers only", "default", dict(layers="paper>=32")),
    ("default recipe, 10 oracle shots at truncation 0.7 (seeds 610000+)", (0.7, 610_000), {}),
    ("default recipe, 10 oracle shots at truncation 1.0 (seeds 610000+)", (1.0, 610_000), {}),
    ("default recipe, 10 oracle shots at truncation 0.7 (seeds 620000+)", (0.7, 620_000), {}),
    ("default recipe, 10 oracle shots at truncation 1.0 (seeds 620000+)", (1.0, 620_000), {}),
]
# round 3: the two named heads at each number of shots
RECIPES3 = [("MLP (default before round 4)", {}), ("paper CNN, 600 steps, no class weights", dict(head="cnn", steps=600,
                                                                             class_weights="none"))]
# round 4: the loss: focal (gamma 2, with the default inverse-frequency class weights as its alpha) against
# the default cross-entropy; the issue names class-balanced and focal losses for the small parts
RECIPES4 = [("MLP, cross-entropy (default before round 4)", {}),
            ("MLP, focal loss (gamma 2, the default since round 4)", dict(focal_gamma=2.0))]
# rounds by number of shots: (section, title, recipes, what the round asks)
BY_SHOTS = {
    3: ("fewshot_recipes3", "Few-shot recipes, round 3: MLP against the paper's CNN by number of shots (issue #15)",
        RECIPES3, "The default MLP against the paper's CNN: whether the head should depend on the number of shots."),
    4: ("fewshot_recipes4", "Few-shot recipes, round 4: focal loss against cross-entropy (issue #15)", RECIPES4,
        "The default MLP (cross-entropy with inverse-frequency class weights) against the same MLP with the focal "
        "loss (gamma 2, the same class weights): whether down-weighting the pixels the head already gets right "
        "helps the small parts."),
}


def score(G, head, ws: torch.Tensor, truth: torch.Tensor) -> tuple[float, list[float]]:
    acc = ScoreAccumulator(len(FACES))
    for i in range(0, len(ws), 8):
        _, logp = head.predict_ws(G, ws[i:i + 8])
        if logp.shape[-1] != truth.shape[-1]:  # a head on smaller feature maps: its logits at the image's size
            logp = F.interpolate(logp, size=truth.shape[-2:], mode="bilinear", align_corners=False)
        acc.add(logp.argmax(1), truth[i:i + 8])
    s = acc.scores()
    return s.miou, s.iou.tolist()


def style_mix_agreement(G, oracle, shots: Shots, cut: int, views: int = 3) -> float:
    """mIoU between the oracle's labels of style-mixed shots (ws[cut:] from random latents) and the shots' masks."""
    from partseg.gan.interface import as_fewshot_gan

    fg = as_fewshot_gan(G)
    rand = fg.latents_from_z(fg.random_z(views * len(shots.names), torch.Generator().manual_seed(5)), 1.0)
    mixed = shots.ws.repeat(views, 1, 1).clone()
    mixed[:, cut:] = rand[:, cut:]
    img = fg.render(mixed, shots.seeds * views, shots.noise_mode)
    labels, _ = predict_labels(oracle, img)
    acc = ScoreAccumulator(len(FACES))
    acc.add(labels, shots.masks.repeat(views, 1, 1))
    return acc.scores().miou


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--n-test", type=int, default=24)
    ap.add_argument("--round", type=int, default=1, choices=[1, 2, 3, 4],
                    help="2: layers and shot truncation; 3: MLP against CNN at 1/5/10 shots; 4: focal loss")
    ap.add_argument("--shots", default="1,5,10", help="rounds 3 and 4: numbers of shots (default 1,5,10)")
    ap.add_argument("--report-only", action="store_true", help="report the heads this round has cached, train none")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    G = load_generator("builtin:faces128")
    oracle = load_oracle(ALIGNED_ORACLE)
    shots = load_shots(builtin_annotations("faces128"))
    test = sample(G, args.n_test, seed=TEST_SEED)
    truth, conf = predict_labels(oracle, test.images)
    print(f"test set (a): {args.n_test} samples, oracle mean max-softmax {float(conf.mean()):.3f}", flush=True)
    rows = []

    cache_path = ROOT / "runs" / "fewshot_recipes" / f"results-{args.n_test}-{args.threads}.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    gan_digest = hashlib.sha256(builtin_path("faces128").read_bytes()).hexdigest()[:12]

    def run(name: str, sh: Shots, overrides: dict, seed: int = 0) -> None:
        cfg = FewShotConfig(seed=seed, **{**CROSS_ENTROPY, **overrides})
        key = json.dumps([recipe_dict(cfg), shots_digest(sh), gan_digest])
        if args.report_only and key not in cache:
            return
        if key not in cache:  # an interrupted run resumes with the recipes it has not scored yet
            t = time.perf_counter()
            head = train_head(G, sh, cfg, progress=False)
            seconds = time.perf_counter() - t
            cache[key] = [seconds, *score(G, head, test.ws, truth)]
            atomic_write_text(json.dumps(cache), cache_path)
        seconds, miou, iou = cache[key]
        rows.append((name, len(sh.names), seconds, miou, iou))
        print(f"{name}: {seconds:.0f} s, mIoU {miou:.3f} | "
              + " ".join(f"{n}:{v:.2f}" for n, v in zip(FACES.names, iou, strict=True)), flush=True)

    if args.round in BY_SHOTS:
        recipes = BY_SHOTS[args.round][2]
        for k in [int(x) for x in args.shots.split(",")]:
            for seed in range(3):
                sh = oracle_shots(G, oracle, k, SHOT_SEED0 + 1000 * seed)
                for name, overrides in recipes:
                    run(name, sh, overrides, seed)
        write_by_shots(rows, args, float(conf.mean()), gan_digest)
        return
    if args.round == 2:
        res = G.synthesis.layer_resolutions()
        named = {"paper+torgb": ",".join(default_layers(G, "paper", include_torgb=True)),  # as names: a config string
                 "paper>=32": ",".join(n for n in default_layers(G, "paper") if res[n] >= 32)}
        for name, which, overrides in RECIPES2:
            sh = shots if which == "default" else oracle_shots(G, oracle, 10, which[1], which[0])
            overrides = {**overrides, "layers": named.get(overrides.get("layers"), overrides.get("layers", "paper"))}
            run(name, sh, overrides)
        write_round2(rows, args, float(conf.mean()), gan_digest)
        return
    for name, k, overrides in RECIPES:
        run(name, shots.subset(list(range(k))), overrides)
    run("ceiling: 2000 steps of 4096 pixels on 60 oracle-labelled samples (truncation 0.7)",
        oracle_shots(G, oracle, 60, CEILING_SEED, 0.7), dict(pixels_per_step=4096))
    mix = {cut: style_mix_agreement(G, oracle, shots, cut) for cut in (6, 8, 10)}
    print(f"style mixing, oracle labels of mixed shots vs the shots' masks (mIoU): {mix}")
    default = asdict(FewShotConfig())
    table = [f"| {n} | {k} | {s:.0f} | {m:.3f} | " + " | ".join(f"{v:.2f}" for v in iou) + " |"
             for n, k, s, m, iou in rows]
    text = "\n".join([
        "## Few-shot recipes on builtin:faces128 (issue #15)",
        "",
        f"Heads trained by the shipped `train_head` on the default shots of `builtin:faces128`, scored on test set "
        f"(a): {args.n_test} generated samples without truncation (seeds {TEST_SEED}+) labelled by the aligned "
        f"label oracle, whose mean max-softmax on them is {float(conf.mean()):.3f}. Seconds: training only"
        f"{f', {args.threads} torch thread(s)' if args.threads else ''}. Default recipe after this run: "
        f"`{ {k: default[k] for k in ('head', 'steps', 'lr', 'pixels_per_step', 'class_weights', 'amp')} }`.",
        "",
        f"- Machine: {machine()}",
        f"- Command: `python3 benchmarks/fewshot_recipes.py{f' --threads {args.threads}' if args.threads else ''}`",
        f"- Date (UTC): {utc_now()}",
        "",
        "| recipe | shots | train s | mIoU | " + " | ".join(FACES.names) + " |",
        "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in FACES.names) + " |",
        *table,
        "",
        "Style mixing as shot augmentation (a shot's W+ from index `cut` on replaced by random latents' rows): the "
        "oracle's labels of the mixed images against the shot's mask, mIoU over 3 views of each of the 10 shots: "
        + ", ".join(f"cut {c}: {v:.3f}" for c, v in mix.items())
        + ". Mixing from the middle layers (cut 6, 8) moves parts, so the shot's mask does not label the mixed view; "
        "mixing only the last layer's styles (cut 10) keeps most of the layout but changes little; views as "
        "training data are not measured yet and not used.",
    ])
    write_section("fewshot_recipes", text)
    print(text)


def write_round(section: str, title: str, intro: str, command: str, header: list[str], table: list[str]) -> None:
    """One round's BENCHMARKS.md section: intro, machine, command, date and the per-class table."""
    write_section(section, "\n".join([
        f"## {title}", "", intro, "",
        f"- Machine: {machine()}",
        f"- Command: `python3 benchmarks/fewshot_recipes.py {command}`",
        f"- Date (UTC): {utc_now()}",
        "",
        "| " + " | ".join([*header, *FACES.names]) + " |",
        "| --- | " + " | ".join("---:" for _ in [*header[1:], *FACES.names]) + " |",
        *table,
    ]))
    print("\n".join(table))


def write_round2(rows: list, args, conf: float, gan_digest: str) -> None:
    table = [f"| {n} | {s:.0f} | {m:.3f} | " + " | ".join(f"{v:.2f}" for v in iou) + " |" for n, _, s, m, iou in rows]
    write_round("fewshot_recipes2", "Few-shot recipes, round 2: feature layers and shot truncation (issue #15)",
                f"The default head recipe (`FewShotConfig()`) on `builtin:faces128` as shipped now (file digest "
                f"{gan_digest}), scored as in round 1 on test set (a): {args.n_test} generated samples without "
                f"truncation (seeds {TEST_SEED}+) labelled by the aligned oracle (its mean max-softmax on them: "
                f"{conf:.3f}). Rows 2-4 change the feature layers (default: the paper's, every modulated conv from 8 "
                "px); rows 5-8 replace the default annotation set by 10 oracle-labelled samples drawn at truncation "
                "0.7 (as the default set) or 1.0 (as the test samples and real faces' variety), two seed sets each.",
                "--round 2" + (f" --threads {args.threads}" if args.threads else ""),
                ["recipe", "train s", "mIoU"], table)


def write_by_shots(rows: list, args, conf: float, gan_digest: str) -> None:
    """Rounds 3 and 4: recipes by number of shots, mean ± sd over the shot sets."""
    section, title, recipes, question = BY_SHOTS[args.round]
    groups: dict[tuple[str, int], list] = {}
    for name, k, seconds, miou, iou in rows:
        groups.setdefault((name, k), []).append((seconds, miou, iou))
    table = []
    for (name, k), runs in sorted(groups.items(), key=lambda g: (g[0][1], g[0][0] != recipes[0][0])):
        m = torch.tensor([r[1] for r in runs])
        iou = torch.tensor([r[2] for r in runs]).mean(0)
        sd = f" ± {m.std():.3f}" if len(runs) > 1 else ""
        table.append(f"| {name} | {k} | {len(runs)} | {sum(r[0] for r in runs) / len(runs):.0f} | {m.mean():.3f}{sd} | "
                     + " | ".join(f"{v:.2f}" for v in iou) + " |")
    write_round(section, title,
                f"{question} `builtin:faces128` (file digest {gan_digest}); the shot sets of "
                f"`benchmarks/label_efficiency.py` (k "
                f"oracle-labelled samples at truncation 0.7, seeds {SHOT_SEED0} + 1000 x set), 3 sets per k, head "
                f"seed = set; test set (a): {args.n_test} generated samples without truncation (seeds {TEST_SEED}+) "
                f"labelled by the aligned oracle (its mean max-softmax on them: {conf:.3f}). mIoU: mean ± sd over the "
                "sets; per-class IoU: their mean. Seconds: training only"
                + (" (rows with fewer sets: the run was stopped there and reported with --report-only; the command "
                   "resumes it)." if args.report_only else "."),
                f"--round {args.round} --n-test {args.n_test} --shots {args.shots}"
                + (f" --threads {args.threads}" if args.threads else ""),
                ["head", "shots", "sets", "train s", "mIoU"], table)


if __name__ == "__main__":
    main()
