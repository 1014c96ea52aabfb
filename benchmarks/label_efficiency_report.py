"""The label-efficiency benchmark's report (issue #15): curves, crossings, targets and the Fig. 6 plot, read off the
results cache; kept apart from the runs so a report can be rewritten without training anything."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from report import machine, utc_now, write_section

from partseg.labels import FACES

ROOT = Path(__file__).resolve().parents[1]


def recipe_text() -> str:
    """The default head recipe in a line: what the few-shot rows (cached under its digest) were trained with."""
    from partseg.fewshot.learner import FewShotConfig

    c = FewShotConfig()
    return (f"{c.head}, {c.steps} steps of {c.pixels_per_step} pixels, lr {c.lr:g}, {c.class_weights} class weights, "
            + (f"focal loss gamma {c.focal_gamma:g}" if c.focal_gamma else "cross-entropy"))


def autoshot_key(name: str, k: int) -> str:
    """Results-cache key of an auto-shot recipe (the unnamed one is the original whole-image recipe)."""
    return f"autoshot{'-' + name if name else ''}/{k}/0"


def autoshot_label(name: str, r: dict) -> str:
    if not name:
        return "auto-shot UNet (whole images)"
    return f"auto-shot UNet ({r['crop']} px windows, {r['class_weights']} class weights)"


def crossing(sup: list[tuple[int, float]], value: float) -> str:
    """The N at which the supervised mean curve reaches `value`, interpolated on log N ("< 1" / "> max" outside)."""
    for (n0, m0), (n1, m1) in zip(sup, sup[1:], strict=False):
        if m0 <= value <= m1 and m1 > m0:
            return f"{math.exp(math.log(n0) + (value - m0) / (m1 - m0) * (math.log(n1) - math.log(n0))):.0f}"
    return f"< {sup[0][0]}" if value < sup[0][1] else f"> {sup[-1][0]}"


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def curve(results: dict, prefix: str, xs: list[int], test: str, seeds: int) -> list[tuple[int, float, float, int]]:
    """(x, mean, sd, seeds done) for every x with at least one finished seed."""
    out = []
    for x in xs:
        done = [results[f"{prefix}/{x}/{s}"][test]["miou"] for s in range(seeds) if f"{prefix}/{x}/{s}" in results]
        if done:
            out.append((x, *mean_sd(done), len(done)))
    return out


def fmt(m: float, sd: float, n: int, seeds: int) -> str:
    return f"{m:.3f} ± {sd:.3f}" + ("" if n == seeds else f" ({n} seed{'s' if n > 1 else ''})")


def target_rows(results: dict, sup_b: list, sup_c: list, shots_b: list, autos: list, k10: int,
                seeds: int) -> list[str]:
    """The issue's targets as table rows, each read off the curves (a target whose inputs are missing is left out)."""
    sup_a, sup_w = ({n: m for n, m, *_ in c} for c in (sup_b, sup_c))
    shots = {k: m for k, m, *_ in shots_b}
    rows = []

    def row(name: str, value: float, bar: float, bar_name: str) -> None:
        rows.append(f"| {name} >= {bar_name} | {value:.3f} vs {bar:.3f} | {'met' if value >= bar else 'missed'} "
                    f"({value - bar:+.3f}) |")

    for k, n, why in ((1, 50, "target"), (1, 100, "paper"), (k10, 200, "target"), (k10, 500, "paper")):
        if k in shots and n in sup_a:
            row(f"{k}-shot head, aligned ({why})", shots[k], sup_a[n], f"supervised N={n}")
    if k10 in shots:
        row(f"{k10}-shot head, aligned", shots[k10], 0.75, "0.75")
    for label, auto in autos:
        if k10 in shots:
            row(f"{label}, aligned", auto["aligned"]["miou"], shots[k10], f"the {k10}-shot head")
        if 50 in sup_w:
            row(f"{label}, wild", auto["wild"]["miou"], sup_w[50], "supervised N=50")
    head = [results[f"fewshot/{k10}/{s}"]["train_seconds"] for s in range(seeds) if f"fewshot/{k10}/{s}" in results]
    if head:
        mean = statistics.mean(head)
        rows.append(f"| {k10}-shot head trains in <= 60 s (CPU, 1 thread beside other work) | {mean:.0f} s | "
                    f"{'met' if mean <= 60 else 'missed'} |")
    return rows


def conv_key(n: int, seed: int = 0) -> str:
    """Results key of a 2x-steps run (seed 0's key predates the other seeds' and stays as it was)."""
    return f"convergence/{n}" if seed == 0 else f"convergence/{n}/{seed}"


def longest_schedule(results: dict, sup_n: list[int], seeds: int) -> tuple[dict, list[int]]:
    """The results with each N's supervised entries replaced by its 2x-steps runs where every seed has one: the
    curve shows the longest schedule run at every seed, never a mix of schedules within one N."""
    out, longer = dict(results), []
    for n in sup_n:
        if all(conv_key(n, s) in results for s in range(seeds)):
            out.update({f"supervised/{n}/{s}": results[conv_key(n, s)] for s in range(seeds)})
            longer.append(n)
    return out, longer


def convergence_rows(results: dict, convergence_n: list[int], seeds: int) -> list[str]:
    """Table rows: each seed run with both schedules, then a mean row for an N where more than one seed has both."""
    def row(n: int, seed: str, a: dict, b: dict, steps: bool = True) -> str:
        a_steps, b_steps = (a["steps"], b["steps"]) if steps else ("", "")
        gain = {k: b[k]["miou"] - a[k]["miou"] for k in ("aligned", "wild")}
        return (f"| {n} | {seed} | {a_steps} | {a['aligned']['miou']:.3f} | {b_steps} | {b['aligned']['miou']:.3f} "
                f"| {gain['aligned']:+.3f} | {gain['wild']:+.3f} |")

    rows = []
    for n in convergence_n:
        pairs = [(s, results[f"supervised/{n}/{s}"], results[conv_key(n, s)]) for s in range(seeds)
                 if conv_key(n, s) in results and f"supervised/{n}/{s}" in results]
        rows += [row(n, str(s), a, b) for s, a, b in pairs]
        if len(pairs) > 1:
            mean = [{k: {"miou": statistics.mean(p[i][k]["miou"] for p in pairs)} for k in ("aligned", "wild")}
                    for i in (1, 2)]
            rows.append(row(n, f"mean of {len(pairs)}", *mean, steps=False))
    return rows


def write_report(results: dict, args, missing: list[str], *, gan: str, convergence_n: list[int],
                 autoshot: dict) -> None:
    """The section and the plot from whatever is finished; an interim report says what is missing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k10, seeds = max(args.shots_k), args.seeds
    autos = [(autoshot_label(name, r), results[autoshot_key(name, k10)]) for name, r in autoshot.items()
             if autoshot_key(name, k10) in results]
    sup_results, longer = longest_schedule(results, args.sup_n, seeds)
    sup_b, sup_c = (curve(sup_results, "supervised", args.sup_n, t, seeds) for t in ("aligned", "wild"))
    shots_a, shots_b = (curve(results, "fewshot", args.shots_k, t, seeds) for t in ("generated", "aligned"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, test, sup in ((axes[0], "aligned", sup_b), (axes[1], "wild", sup_c)):
        if sup:
            xs, m, sd, _ = zip(*sup, strict=True)
            ax.errorbar(xs, m, yerr=sd, fmt="o-", capsize=3, label="supervised UNet (exact masks)")
        if test == "aligned" and shots_b:
            xs, m, sd, _ = zip(*shots_b, strict=True)
            ax.errorbar(xs, m, yerr=sd, fmt="s-", capsize=3, label="k-shot head (GAN inversion)")
        for i, (label, entry) in enumerate(autos):
            ax.axhline(entry[test]["miou"], color=f"C{3 + i}", ls="--", label=f"{label} ({k10} shots)")
        ax.set_xscale("log")
        ax.set_xlabel("labelled images")
        ax.set_title(f"{test} renders (test set {'b' if test == 'aligned' else 'c'})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("mIoU")
    if missing:
        fig.suptitle(f"interim: {len(missing)} runs still missing", fontsize=9)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "label_efficiency2.png", dpi=110)
    wild = {n: (m, sd, c) for n, m, sd, c in sup_c}
    steps = {n: next(sup_results[f"supervised/{n}/{s}"]["steps"] for s in range(seeds)
                     if f"supervised/{n}/{s}" in sup_results) for n, *_ in sup_b}  # as recorded by the runs
    rows = [f"| supervised UNet, {steps[n]} steps | {n} | - | {fmt(m, sd, c, seeds)} | {fmt(*wild[n], seeds)} |"
            for n, m, sd, c in sup_b]
    gen = {k: (m, sd, c) for k, m, sd, c in shots_a}
    rows += [f"| {k}-shot head (default recipe) | {k} | {fmt(*gen[k], seeds)} | {fmt(m, sd, c, seeds)} | - |"
             for k, m, sd, c in shots_b]
    rows += [f"| {label} from the {k10}-shot head, seed 0 ({auto.get('steps', '?')} steps, pool {auto.get('pool', 0)}) "
             f"| {k10} | - | {auto['aligned']['miou']:.3f} | {auto['wild']['miou']:.3f} |" for label, auto in autos]
    sup_means = [(n, m) for n, m, _, _ in sup_b]
    cross = [f"- {k}-shot head ({m:.3f} on aligned renders) equals supervised training with N = "
             f"{crossing(sup_means, m)} labelled images" for k, m, _, _ in shots_b] if len(sup_means) > 1 else []
    wild_means = [(n, m) for n, m, _, _ in sup_c]
    for label, auto in autos if len(sup_means) > 1 else []:
        a, w = auto["aligned"]["miou"], auto["wild"]["miou"]
        cross.append(f"- {label} ({a:.3f} on aligned renders, {w:.3f} on wild) equals supervised training with "
                     f"N = {crossing(sup_means, a)} (aligned) and {crossing(wild_means, w)} (wild) labelled images")
    conv_rows = convergence_rows(results, convergence_n, seeds)
    targets = target_rows(results, sup_b, sup_c, shots_b, autos, k10, seeds)
    named = [(f"{k10}-shot head (b), seed 0", results.get(f"fewshot/{k10}/0", {}).get("aligned"))]
    if sup_b:
        top = sup_b[-1][0]
        named.append((f"supervised N={top} (b), seed 0", sup_results.get(f"supervised/{top}/0", {}).get("aligned")))
    for label, auto in autos:
        named += [(f"{label} (b)", auto["aligned"]), (f"{label} (c)", auto["wild"])]
    per_class = [f"| {name} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in entry["iou"]) + " |"
                 for name, entry in named if entry]

    def seconds(prefix: str, device: str = "cpu") -> str:
        """Mean over the seeds trained on `device` (entries from before the field was recorded ran on the CPU)."""
        done = [sup_results[f"{prefix}/{s}"]["train_seconds"] for s in range(seeds)
                if sup_results.get(f"{prefix}/{s}", {}).get("device", "cpu") == device]
        return f"{statistics.mean(done):.0f} s" if done else "-"

    times = [f"{k}-shot head {seconds(f'fewshot/{k}')}" for k in args.shots_k]
    times += [f"supervised N={n} {seconds(f'supervised/{n}')}" for n, *_ in sup_b]
    gpu_times = [f"N={n} {t}" for n, *_ in sup_b if (t := seconds(f"supervised/{n}", "cuda")) != "-"]
    times += [f"{label} {auto['train_seconds']:.0f} s" for label, auto in autos]
    status = ("Complete." if not missing else
              f"**Interim**: {len(missing)} run{'s' if len(missing) > 1 else ''} not finished yet "
              f"({', '.join(missing[:6])}"
              f"{', ...' if len(missing) > 6 else ''}); rows with fewer than {seeds} seeds say so.")
    oracle = results.get("oracle_confidence", {}).get("value")
    on_gpu = sorted((k for k, v in results.items() if isinstance(v, dict) and v.get("device") == "cuda"),
                    key=lambda k: [int(x) if x.isdigit() else x for x in k.split("/")])
    text = "\n".join([
        "## Label efficiency, second edition (issue #15)",
        "",
        f"`builtin:{gan}`, aligned label oracle, default head recipe (`{recipe_text()}`); mean ± sd over {seeds} "
        "seeds. Test sets: "
        f"(a) {args.n_generated} generated samples labelled by the oracle (its mean max-softmax on them: "
        f"{'-' if oracle is None else f'{oracle:.3f}'}); (b) {args.n_test} aligned renders, heads through GAN "
        f"inversion ({args.inversion_steps} steps, first {args.n_invert}); (c) {args.n_test} wild renders. "
        "Supervised steps: `sup_steps(N)` (1000 at N = 1, growing as N^0.4 to 6000 from N ~ 90), batch 16, the "
        "validation-best checkpoint"
        + (f"; at N = {', '.join(map(str, longer))} the curve shows the runs with twice the steps, run at every "
           "seed (table \"Convergence\" below)" if longer else "")
        + ". Results cache: `benchmarks/results/`. " + status,
        "",
        f"- Machine: {machine()} writing this; the CPU entries ran on 2-core AMD EPYCs of several sessions "
        "(each part on 1 thread beside the other; bf16 autocast where the CPU had bf16 units)"
        + (f"; the {len(on_gpu)} entries with device cuda in the results cache ({', '.join(on_gpu)}) on one NVIDIA "
           "H200, `bash training/gpu_lease.sh 500`" if on_gpu else ""),
        "- Command: `python3 benchmarks/label_efficiency.py` (run as `--part fewshot` and `--part supervised`)",
        f"- Date (UTC): {utc_now()}",
        "",
        "| method | labels | (a) generated | (b) aligned | (c) wild |",
        "| --- | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        *cross,
        "",
        *(["| target (issue #15; means over seeds) | measured | verdict |", "| --- | --- | --- |", *targets, ""]
          if targets else []),
        "Convergence of the supervised schedule: a seed again with twice the steps (the same images and "
        "augmentation draws; the validation-best checkpoint of each). " + ("Not run yet." if not conv_rows else ""),
        *(["", "| N | seed | steps | (b) aligned | 2x steps | (b) aligned | gain (b) | gain (c) wild |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", *conv_rows] if conv_rows else []),
        "",
        "| per-class IoU | " + " | ".join(FACES.names) + " |",
        "| --- | " + " | ".join("---:" for _ in FACES.names) + " |",
        *per_class,
        "",
        "Training time on the CPU (mean over the seeds trained there; supervised UNets: seconds summed from each "
        "run's log, so a run resumed across sessions counts in full; 1 thread beside other jobs): "
        + ", ".join(times) + "."
        + (" On one H200 (`training/gpu_lease.sh`, 13 processes sharing the GPU, so not a speed figure): "
           + ", ".join(gpu_times) + "." if gpu_times else ""),
        "",
        "![label efficiency](docs/label_efficiency2.png)",
    ])
    write_section("label_efficiency2", text)
    print(text)
