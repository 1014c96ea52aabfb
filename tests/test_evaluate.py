"""`partseg eval` against hand-computed IoU."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from partseg.cli import app
from partseg.data.dataset import write_mask
from partseg.labels import Labels

LABELS = Labels(["bg", "a", "b"], [(0, 0, 0), (255, 0, 0), (0, 255, 0)])


def test_eval_cli_matches_hand_computed_iou(tmp_path):
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], np.uint8)
    pr = np.array([[0, 1, 1, 1], [2, 0, 2, 1]], np.uint8)
    write_mask(tmp_path / "gt" / "masks" / "x.png", gt, LABELS)
    LABELS.save(tmp_path / "gt" / "labels.json")
    write_mask(tmp_path / "pred" / "labels" / "x.png", pr, LABELS)
    res = CliRunner().invoke(app, ["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "pred" / "eval.json").read_text())
    assert rep["iou"] == {"bg": round(1 / 3, 4), "a": 0.75, "b": 0.5}
    assert rep["miou"] == round((1 / 3 + 0.75 + 0.5) / 3, 4)
    assert rep["pixel_accuracy"] == round(5 / 7, 4)
    assert (tmp_path / "pred" / "eval.png").stat().st_size > 1000


def test_eval_names_the_missing_prediction(tmp_path):
    write_mask(tmp_path / "gt" / "masks" / "y.png", np.zeros((2, 2), np.uint8), LABELS)
    LABELS.save(tmp_path / "gt" / "labels.json")
    write_mask(tmp_path / "pred" / "z.png", np.zeros((2, 2), np.uint8), LABELS)
    res = CliRunner().invoke(app, ["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")])
    assert res.exit_code != 0 and "no prediction for 1 ground-truth masks: y" in str(res.exception)
