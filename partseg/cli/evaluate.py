"""`partseg eval`: predictions against ground-truth masks."""

from __future__ import annotations

from pathlib import Path

import typer

from partseg.cli.common import app


@app.command("eval")
def evaluate(
    pred: Path = typer.Option(..., "--pred", help="Predicted masks (folder, or a predict/data-set folder)."),
    gt: Path = typer.Option(..., "--gt", help="Ground-truth masks (folder, or a data-set folder)."),
    labels: Path = typer.Option(None, "--labels", help="labels.json (default: the ground truth's)."),
    out: Path = typer.Option(None, "--out", help="Where eval.json and eval.png go (default: --pred)."),
) -> None:
    """Per-class IoU, mIoU, pixel accuracy and confusion matrix of predictions against ground truth."""
    from partseg.eval.evaluate import evaluate_and_write
    from partseg.labels import Labels

    lab = Labels.load(labels or gt / "labels.json")
    rep = evaluate_and_write(pred, gt, lab, out or pred)
    for n, v in rep["iou"].items():
        typer.echo(f"  {n:>12s}  {'-' if v is None else f'{v:.3f}'}")
    typer.echo(f"mIoU {rep['miou']:.4f}, pixel accuracy {rep['pixel_accuracy']:.4f} -> {out or pred}/eval.json, "
               f"eval.png")
