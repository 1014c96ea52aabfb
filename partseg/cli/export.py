"""`partseg export ...`: ONNX (float32 or INT8) and TensorRT."""

from __future__ import annotations

from pathlib import Path

import typer

from partseg.cli.common import export_app, fail


@export_app.command("onnx")
def export_onnx(
    unet: Path = typer.Argument(..., help="A distilled UNet (.safetensors, or a run folder: best, else last)."),
    out: Path = typer.Option(..., "--out", help="The .onnx file to write."),
    opset: int = typer.Option(18, "--opset"),
    min_agreement: float = typer.Option(None, "--min-agreement", help="Parity: least share of pixels with the "
                                        "same class as the reference (PyTorch; with --int8 the float32 ONNX "
                                        "model). Default 0.999, with --int8 0.97."),
    int8: bool = typer.Option(False, "--int8", help="Static INT8 quantisation (QDQ, per-channel weights) for "
                              "CPU deployments, calibrated on generated images of the UNet's GAN or --calib."),
    calib: Path = typer.Option(None, "--calib", help="--int8: calibrate on the images in this folder (or its "
                               "images/ subfolder) instead of generated ones."),
    gan: str = typer.Option(None, "--gan", help="--int8: the generator to calibrate with (default: the built-in "
                            "one the UNet was distilled from, found by its fingerprint)."),
    n_calib: int = typer.Option(64, "--n-calib", help="--int8: generated calibration images."),
    calib_method: str = typer.Option("minmax", "--calib-method", help="--int8: minmax | entropy | percentile."),
    max_miou_drop: float = typer.Option(0.02, "--max-miou-drop", help="--int8: refuse if the mIoU on held-out "
                                        "rendered faces falls by more than this (built-in face labels only)."),
) -> None:
    """Export a UNet to ONNX (dynamic batch, height, width), check it, and compare it with PyTorch."""
    if not int8:
        given = [name for name, v in (("--calib", calib), ("--gan", gan)) if v is not None]
        if given:
            raise typer.BadParameter(f"{' and '.join(given)} only apply with --int8")
        from partseg.runtime.onnx_export import export_onnx as run_export

        res = run_export(unet, out, opset=opset, min_agreement=0.999 if min_agreement is None else min_agreement)
        for p in res.parity:
            typer.echo(f"parity vs PyTorch: {p}")
        typer.echo(f"exported {unet} -> {out} (opset {opset}, dynamic batch/height/width in multiples of "
                   f"{res.info.stride}, {res.info.num_classes} classes; metadata carries labels and normalisation)")
        return
    if calib is not None and gan is not None:
        raise typer.BadParameter("give either --calib DIR or --gan CKPT, not both")
    from partseg.runtime.quantize import export_int8

    res8 = export_int8(unet, out, calib=calib, gan=gan, n_calib=n_calib, method=calib_method, opset=opset,
                       min_agreement=0.97 if min_agreement is None else min_agreement, max_miou_drop=max_miou_drop)
    typer.echo(f"float32 parity vs PyTorch: {res8.fp32_parity[0]}")
    typer.echo(f"int8 parity vs float32: {res8.parity}")
    typer.echo(f"exported {unet} -> {out} (int8 QDQ, {calib_method} calibration on {res8.calibration})")


@export_app.command("tensorrt")
def export_tensorrt(
    model: Path = typer.Argument(..., help="ONNX file from `partseg export onnx`."),
    out: Path = typer.Option(..., "--out", help="Engine to write (.plan, .engine or .trt); OUT.json sidecar beside."),
    fp16: bool = typer.Option(False, "--fp16", help="FP16 engine (TensorRT 10: builder flag; 11: fp16 ONNX, "
                              "float32 I/O). Parity is reported, not enforced."),
    min_shape: str = typer.Option("1x3x64x64", "--min", help="Smallest input NxCxHxW (H, W multiples of the stride)."),
    opt_shape: str = typer.Option("8x3x256x256", "--opt", help="Input NxCxHxW the kernels are tuned for."),
    max_shape: str = typer.Option("32x3x512x512", "--max", help="Largest input NxCxHxW (larger batches run in "
                                  "chunks; larger images are refused)."),
    workspace_gib: float = typer.Option(4.0, "--workspace-gib", help="Builder workspace memory limit (GiB)."),
    timing_cache: Path = typer.Option(None, "--timing-cache", help="Timing cache file: read if present, saved "
                                      "after the build (faster rebuilds on the same GPU and TensorRT)."),
) -> None:
    """Build a TensorRT engine from an ONNX file, compare it with onnxruntime, and write it with its sidecar."""
    from partseg.runtime.tensorrt import require_tensorrt

    try:
        from partseg.runtime.tensorrt_build import parse_shape

        for text, option in ((min_shape, "--min"), (opt_shape, "--opt"), (max_shape, "--max")):
            parse_shape(text, option)
    except ValueError as e:
        fail(str(e), code=2)
    try:
        require_tensorrt()
    except ImportError as e:
        fail(str(e), code=2)
    from partseg.runtime.tensorrt_build import build_engine

    try:
        res = build_engine(model, out, fp16=fp16, min_shape=min_shape, opt_shape=opt_shape, max_shape=max_shape,
                           workspace_gib=workspace_gib, timing_cache=timing_cache)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        fail(str(e))
    for p in res.parity:
        typer.echo(f"parity vs onnxruntime: {p}")
    i = res.info
    how = f" via {res.fp16_method}" if res.fp16_method else ""
    note = "; fp16 agreement is reported, not enforced" if i.precision == "fp16" else ""
    typer.echo(f"built {out} ({i.precision}{how}, TensorRT {i.tensorrt_version}, {i.gpu}; profile "
               f"{'x'.join(map(str, i.min_shape))} .. {'x'.join(map(str, i.max_shape))}) and {res.sidecar.name}; "
               f"worst parity: {res.worst}{note}")
