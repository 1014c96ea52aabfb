"""The label-efficiency report's arithmetic (benchmarks/label_efficiency_report.py): where a few-shot score
crosses the supervised curve, and the issue's targets read off the results as verdicts."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from label_efficiency_report import convergence_rows, crossing, curve, longest_schedule, target_rows  # noqa: E402


def test_crossing_interpolates_on_log_n_and_says_when_outside():
    sup = [(1, 0.2), (10, 0.4), (100, 0.8)]
    assert crossing(sup, 0.4) == "10"
    assert crossing(sup, 0.3) == f"{math.sqrt(10):.0f}"  # halfway in log N between 1 and 10
    assert crossing(sup, 0.6) == "32"  # 10 ** 1.5 = 31.6
    assert crossing(sup, 0.1) == "< 1"
    assert crossing(sup, 0.9) == "> 100"


def test_curve_means_the_finished_seeds_and_counts_them():
    res = {"supervised/5/0": {"aligned": {"miou": 0.4}}, "supervised/5/2": {"aligned": {"miou": 0.6}},
           "supervised/10/1": {"aligned": {"miou": 0.7}}}
    (n5, m5, sd5, c5), (n10, m10, sd10, c10) = curve(res, "supervised", [1, 5, 10], "aligned", 3)
    assert (n5, c5, n10, c10) == (5, 2, 10, 1)
    assert m5 == pytest.approx(0.5) and sd5 == pytest.approx(math.sqrt(0.02))
    assert (m10, sd10) == (0.7, 0.0)


def test_targets_give_a_verdict_each_and_skip_what_is_missing():
    sup_b = [(50, 0.80, 0, 3), (200, 0.90, 0, 3)]
    sup_c = [(50, 0.55, 0, 3)]
    shots_b = [(1, 0.85, 0, 3), (10, 0.70, 0, 3)]
    autos = [("auto", {"aligned": {"miou": 0.72}, "wild": {"miou": 0.50}})]
    results = {f"fewshot/10/{s}": {"train_seconds": t} for s, t in enumerate([50, 60, 100])}
    rows = target_rows(results, sup_b, sup_c, shots_b, autos, 10, seeds=3)
    verdicts = {r.split(" | ")[0].lstrip("| "): r.split(" | ")[2].split(" ")[0] for r in rows}
    assert verdicts == {
        "1-shot head, aligned (target) >= supervised N=50": "met",  # N=100 (paper) is not in the curve: no row
        "10-shot head, aligned (target) >= supervised N=200": "missed",
        "10-shot head, aligned >= 0.75": "missed",
        "auto, aligned >= the 10-shot head": "met",
        "auto, wild >= supervised N=50": "missed",
        "10-shot head trains in <= 60 s (CPU, 1 thread beside other work)": "missed",  # mean 70 s
    }


def test_convergence_rows_pair_each_seed_and_mean_where_several():
    def run(steps, b, c):
        return {"steps": steps, "aligned": {"miou": b}, "wild": {"miou": c}}

    res = {"supervised/5/0": run(100, 0.3, 0.2), "convergence/5": run(200, 0.4, 0.2),  # seed 0's key has no seed
           "supervised/10/0": run(150, 0.5, 0.3), "convergence/10": run(300, 0.6, 0.4),
           "supervised/10/1": run(150, 0.7, 0.3), "convergence/10/1": run(300, 0.7, 0.3),
           "supervised/10/2": run(150, 0.6, 0.3)}  # no 2x run: no row
    rows = convergence_rows(res, [5, 10, 20], seeds=3)
    assert [r.split(" | ")[:2] for r in rows] == [["| 5", "0"], ["| 10", "0"], ["| 10", "1"], ["| 10", "mean of 2"]]
    assert rows[0].endswith("| +0.100 | +0.000 |")
    assert rows[-1].endswith("| 0.600 |  | 0.650 | +0.050 | +0.050 |")


def test_longest_schedule_replaces_an_n_only_where_every_seed_has_it():
    res = {f"supervised/{n}/{s}": {"steps": 1} for n in (5, 10) for s in range(2)}
    res |= {"convergence/5": {"steps": 2}, "convergence/10": {"steps": 2}, "convergence/10/1": {"steps": 2}}
    out, longer = longest_schedule(res, [5, 10], seeds=2)
    assert longer == [10]
    assert [out[f"supervised/10/{s}"]["steps"] for s in range(2)] == [2, 2]
    assert [out[f"supervised/5/{s}"]["steps"] for s in range(2)] == [1, 1]  # seed 1 has no 2x run: no mix
    assert res["supervised/10/0"]["steps"] == 1  # the caller's results stay as they were
