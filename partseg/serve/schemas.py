"""The JSON answers of the HTTP service as pydantic models: BentoML publishes them in /docs.json, so clients
and the fuzz test see exactly these fields."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class RLE(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: str = Field(description="COCO compressed RLE string (pycocotools' mask.encode / rleToString)")


class ClassCount(BaseModel):
    index: int = Field(description="Class index = mask pixel value")
    name: str
    color: list[int] = Field(description="RGB palette colour of the class")
    pixels: int = Field(description="Pixels of this class")
    fraction: float = Field(description="pixels / (width x height)")
    rle: RLE | None = Field(None, description="The class's binary mask (with rle=true)")


class Prediction(BaseModel):
    width: int
    height: int
    backend: str = Field(description="Runtime that produced the mask, e.g. onnxruntime-cpu, tensorrt, torch-cpu")
    model: str = Field(description="Model-store tag of the served model")
    rle_format: str | None = Field(description="'coco-compressed' when rle was requested, else null")
    classes: list[ClassCount]


class ClassInfo(BaseModel):
    index: int
    name: str
    color: list[int]
    description: str = ""


class Info(BaseModel):
    model: str
    backend: str
    artefact: str = Field(description="Packaged file the backend runs")
    skipped: list[str] = Field(description="Better artefacts that could not be used here, and why")
    classes: list[ClassInfo]
    inversion: bool = Field(description="Whether predict_inversion is enabled")
    config: dict[str, Any] = Field(description="Batching and limits in effect")
