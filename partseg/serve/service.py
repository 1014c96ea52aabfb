"""partseg over HTTP (BentoML 1.4): a front service (image upload in, PNG/JSON out) over a batchable model service.

    partseg serve package model.onnx --name partseg-segmenter     # once: into BentoML's model store
    partseg serve start --port 3000                     # = bentoml serve partseg.serve.service:Segmenter

Settings come from PARTSEG_* environment variables (or a TOML file named by PARTSEG_SERVE_CONFIG) and are read
when this module is imported; see partseg.serve.ServeConfig and serve/README.md. The logic lives in
the other modules of partseg.serve; this one only wires it to BentoML (serve/service.py at the top of a
source checkout re-exports it for `bentoml build`). The response models are in partseg.serve.schemas.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import bentoml
import numpy as np
import prometheus_client
from bentoml.exceptions import BadInput, BentoMLException, ServiceUnavailable
from bentoml.validators import ContentType
from PIL import Image as PILImage
from pydantic import BeforeValidator, Field
from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse, Response

from partseg import serve as serving
from partseg.serve.schemas import Info, Prediction

logger = logging.getLogger("partseg.serve")
CFG = serving.ServeConfig.from_env()
GPU = serving.gpu_requested(CFG)
BATCH = ({"batchable": True, "max_batch_size": CFG.max_batch_size, "max_latency_ms": CFG.max_latency_ms}
         if CFG.batching else {"batchable": False})  # BentoML requires max_batch_size > 1 for a batchable API

# The declared content type of the upload: BentoML turns the multipart file into a temporary Path and drops its
# type, so a validator running before that conversion (in the request's own context) keeps it for the endpoint.
_UPLOAD_TYPE: ContextVar[str | None] = ContextVar("partseg_upload_type", default=None)


def _remember_type(value: Any) -> Any:
    _UPLOAD_TYPE.set(getattr(value, "content_type", None))
    return value


ImageUpload = Annotated[Path, BeforeValidator(_remember_type),
                        Field(description="The image file (PNG, JPEG, WebP, BMP, TIFF or GIF), sent as the "
                                          "multipart/form-data field 'image'.")]
INFO_KEYS = ("max_batch_size", "max_latency_ms", "batch_max_pixels", "max_pixels", "max_upload_mb", "max_side",
             "max_aspect", "max_queue", "max_buffered_mb", "retry_after_s", "inversion_steps", "inversion_max_pixels",
             "inversion_timeout_s")
PNG = Annotated[PILImage.Image, ContentType("image/png")]


# runner_connection: BentoML 1.4.40's client for a dependency replaces its connection pool every 100 requests /
# 300 s by closing the old one, which kills requests still in flight on it (500s under concurrency); the pool is
# kept for good instead, and a call that meets a dropped connection is retried once (segment is idempotent).
@bentoml.service(name="partseg-model", workers=1, threads=1, traffic={"timeout": 120},
                 runner_connection={"max_requests": 2**62, "max_age": 1e12},
                 **({"resources": {"gpu": 1}} if GPU else {}))
class SegmenterModel:
    """The network: network-size float32 inputs in (Segmenter.prepare, done by the front), float32 logits out.

    BentoML's adaptive batching sizes its queue from past calls, fitting duration = a * n + b over the last 50, and
    refuses (503) a request once wait + a * queue length + b reaches the max latency: it assumes every image costs
    the same. A 2048 px image running at its own size takes seconds where a 64 px one takes milliseconds, so a few
    large ones made `a` huge and it refused a third of the small requests afterwards (issue #17 D5). So only inputs
    of at most PARTSEG_BATCH_MAX_PIXELS network pixels are batched (`segment`); larger ones run one by one through a
    plain API (`segment_large`). Each path has its own thread, outside BentoML's one-thread limiter, so a large
    image neither delays nor is counted in the batched calls' timings."""

    bundle_ref = bentoml.models.BentoModel(CFG.model_tag)

    def __init__(self) -> None:
        self.bundle = serving.Bundle.open(self.bundle_ref.path)
        self.loaded = serving.load_segmenter(self.bundle, CFG, GPU)
        self.batch_hist = prometheus_client.Histogram(
            serving.BATCH_METRIC, "Images per backend call of the partseg model service",
            buckets=serving.batch_buckets(CFG.max_batch_size))
        seg = self.loaded.segmenter
        seg.run_prepared([seg.prepare(np.zeros((64, 64, 3), np.uint8))])  # first-run costs before the first request
        self._batched = ThreadPoolExecutor(1, "partseg-batched")
        self._large = ThreadPoolExecutor(1, "partseg-large")

    @bentoml.api(**BATCH)
    async def segment(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        self.batch_hist.observe(len(inputs))
        run = self.loaded.segmenter.run_prepared
        return await asyncio.get_running_loop().run_in_executor(self._batched, run, inputs)

    @bentoml.api
    async def segment_large(self, x: np.ndarray) -> np.ndarray:
        run = self.loaded.segmenter.run_prepared
        return (await asyncio.get_running_loop().run_in_executor(self._large, run, [x]))[0]

    @bentoml.api
    def describe(self) -> dict[str, Any]:
        return {"backend": self.loaded.backend, "artefact": self.loaded.artefact, "skipped": self.loaded.skipped,
                "model": str(self.bundle_ref.tag)}


def _refuse_url_fields() -> None:
    """BentoML reads a multipart *text* value in a file field as a URL and downloads it (here that even fails with
    a 500, for want of uvloop). This service takes uploaded files only: such a value is a 400, nothing is fetched."""
    try:
        from _bentoml_impl.serde import MultipartSerde
    except ImportError:  # another BentoML layout: nothing to patch
        return

    async def file_only(obj: Any) -> Any:
        if isinstance(obj, UploadFile):
            return obj
        raise BadInput("the 'image' field must be an uploaded file (a multipart file part, e.g. curl -F "
                       "image=@face.png), not a text value; this server does not fetch URLs")

    if hasattr(MultipartSerde, "ensure_file"):
        MultipartSerde.ensure_file = staticmethod(file_only)


_refuse_url_fields()


def _cache_mime_types() -> None:
    """BentoML 1.4.40 works out an API's response type on every response by building a pydantic TypeAdapter and
    its JSON schema (IOMixin.mime_type): 12 % of the model service's CPU and 6 % of the front's under load
    (benchmarks/serve_profile.py). The answer depends only on the output class, so it is computed once per class."""
    try:
        from _bentoml_sdk.io_models import IOMixin
    except ImportError:  # another BentoML layout: nothing to patch
        return
    original = IOMixin.mime_type
    if getattr(original, "partseg_cached", False):
        return
    cache: dict[tuple[type, str | None], str] = {}

    def mime_type(cls: type) -> str:
        key = (cls, cls.media_type)  # type: ignore[attr-defined]
        if key not in cache:
            cache[key] = original.__func__(cls)
        return cache[key]

    mime_type.partseg_cached = True  # type: ignore[attr-defined]
    IOMixin.mime_type = classmethod(mime_type)  # type: ignore[method-assign,assignment]


_cache_mime_types()


def _error(e: serving.RequestError) -> JSONResponse:
    return JSONResponse({"error": e.message, "status": int(e.status)}, status_code=int(e.status))  # the guard adds
    # Retry-After to a 503


@bentoml.service(name="partseg", workers=1,
                 traffic={"timeout": max(60.0, CFG.inversion_timeout_s + 30 if CFG.inversion else 0)})
class Segmenter:
    """Image in, part segmentation out (palette PNG, per-class JSON, colour overlay; GAN inversion on request)."""

    model = bentoml.depends(SegmenterModel)
    bundle_ref = bentoml.models.BentoModel(CFG.model_tag)

    def __init__(self) -> None:
        import torch

        from partseg.runtime.segmenter import ModelInfo
        from partseg.runtime.segmenter import Segmenter as Runtime

        self.bundle = serving.Bundle.open(self.bundle_ref.path)
        self.labels = self.bundle.labels
        torch.set_num_threads(1)  # pre/post-processing runs in the thread pool, one request per thread
        info = ModelInfo.from_metadata(self.bundle.info, str(self.bundle.root))
        self.runtime = Runtime(None, info)  # type: ignore[arg-type] - its pre/post-processing only; no backend here
        serving.install_pixel_limit(max(CFG.max_pixels, CFG.inversion_max_pixels if CFG.inversion else 0))
        self._described: dict[str, Any] | None = None
        # Concurrent requests share model calls (partseg.serve.coalesce); with batching off, one call each.
        self._coalesced = serving.Coalescer(self._segment, CFG.max_batch_size) if CFG.batching else None
        self.inversion: serving.InversionRunner | None = None
        self._inversion_turn = asyncio.Lock()
        if CFG.inversion:
            if not self.bundle.has_inversion:
                raise RuntimeError(f"PARTSEG_INVERSION is on but model {CFG.model_tag} was packaged without a "
                                   f"generator and head (partseg serve package ... --gan G --head H)")
            self.inversion = serving.InversionRunner(self.bundle.path(self.bundle.generator),
                                                     self.bundle.path(self.bundle.head), CFG.inversion_threads)
            self.inversion.start()

    async def _image(self, image: Path, max_pixels: int) -> np.ndarray:
        """The upload as uint8 RGB, or a RequestError (content type, emptiness, size, decodability)."""
        serving.check_content_type(_UPLOAD_TYPE.get())
        data = await asyncio.to_thread(Path(image).read_bytes)
        return await asyncio.to_thread(serving.decode_image, data, max_pixels, CFG.max_upload_bytes, "the upload",
                                       CFG.max_side, CFG.max_aspect)

    async def _mask(self, arr: np.ndarray) -> np.ndarray:
        """The runtime's mask: resized to the network size here, run by the model service, resized back here.
        A model service that is down (killed, restarting) is a 503 with Retry-After, not a 500."""
        x = np.ascontiguousarray(await asyncio.to_thread(self.runtime.prepare, arr))

        async def call() -> np.ndarray:
            if x.shape[1] * x.shape[2] > CFG.batch_max_pixels:
                return await self.model.to_async.segment_large(x)
            if self._coalesced is not None:
                return await self._coalesced(x)
            return (await self.model.to_async.segment([x]))[0]

        try:
            try:
                logits = await call()
            except aiohttp.ClientConnectionError as e:  # a pooled connection the model service had closed
                logger.warning("partseg: model-service connection dropped (%s); retrying once", e)
                logits = await call()
        except (aiohttp.ClientError, BentoMLException) as e:
            if isinstance(e, BentoMLException) and int(getattr(e, "error_code", 500)) < 500:
                raise
            logger.warning("partseg: the model service did not answer (%s)", e)
            if isinstance(e, ServiceUnavailable):  # BentoML's batching queue refused it (max latency)
                raise serving.Unavailable(f"the model's queue is full: this request would wait more than "
                                          f"PARTSEG_MAX_LATENCY_MS ({CFG.max_latency_ms} ms); retry after "
                                          f"{CFG.retry_after_s} s") from None
            raise serving.Unavailable(f"the model service is not answering ({type(e).__name__}); it is restarted "
                                      f"automatically when it dies; retry after {CFG.retry_after_s} s") from None
        return await asyncio.to_thread(self.runtime.finish, logits, *arr.shape[:2])

    async def _segment(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return await self.model.to_async.segment(inputs)

    async def _backend(self) -> dict[str, Any]:
        if self._described is None:
            try:
                self._described = await self.model.to_async.describe()
            except (aiohttp.ClientError, BentoMLException) as e:
                raise serving.Unavailable(f"the model service is not answering ({type(e).__name__}); retry after "
                                          f"{CFG.retry_after_s} s") from None
        return self._described

    @bentoml.api(route="/predict")
    async def predict(self, image: ImageUpload) -> PNG:
        """Part segmentation as a palette PNG of the image's size: pixel value = class index, palette = class
        colours (see /info for names). Errors (JSON {"error": ...}): 400 not an image / damaged / empty, 413 over
        the pixel or size limit (decompression bombs included), 415 a content type that is not an image."""
        try:
            arr = await self._image(image, CFG.max_pixels)
            mask = await self._mask(arr)
        except serving.RequestError as e:
            return _error(e)
        png = await asyncio.to_thread(serving.mask_png, mask, self.labels)
        return Response(png, media_type="image/png")

    @bentoml.api(route="/predict_json")
    async def predict_json(
        self, image: ImageUpload,
        rle: Annotated[bool, Field(description="Add each class's mask as COCO compressed RLE (pycocotools' "
                                               "string form, column-major).")] = False,
    ) -> Prediction:
        """Per-class pixel counts and fractions, image size, backend (and COCO RLE per class on request).
        Errors as for /predict (400, 413, 415)."""
        try:
            arr = await self._image(image, CFG.max_pixels)
            mask = await self._mask(arr)
            desc = await self._backend()
        except serving.RequestError as e:
            return _error(e)
        d = await asyncio.to_thread(serving.prediction_json, mask, self.labels, desc["backend"], desc["model"], rle)
        return Prediction.model_validate(d)

    @bentoml.api(route="/overlay")
    async def overlay(
        self, image: ImageUpload,
        alpha: Annotated[float, Field(ge=0, le=1, description="Weight of the class colours.")] = 0.55,
    ) -> PNG:
        """The image blended with its class colours, as an RGB PNG. Errors as for /predict (400, 413, 415)."""
        try:
            arr = await self._image(image, CFG.max_pixels)
            mask = await self._mask(arr)
        except serving.RequestError as e:
            return _error(e)

        def render() -> bytes:
            return serving.rgb_png(self.labels.overlay(arr, mask, alpha))

        return Response(await asyncio.to_thread(render), media_type="image/png")

    @bentoml.api(route="/predict_inversion")
    async def predict_inversion(self, image: ImageUpload) -> PNG:
        """High-accuracy mode (off unless PARTSEG_INVERSION=1): GAN inversion + few-shot head on the image's centre
        square; palette PNG of the image's size, pixels outside the square 255 (unlabelled). Slow: seconds to
        minutes; one inversion at a time, limited by PARTSEG_INVERSION_TIMEOUT_S. Errors: 404 when disabled, 400 /
        413 / 415 as for /predict (with PARTSEG_INVERSION_MAX_PIXELS), 503 busy past the timeout, 504 timed out."""
        if self.inversion is None:
            return _error(serving.Disabled("the GAN-inversion mode is disabled on this server: start it with "
                                           "PARTSEG_INVERSION=1 and a model packaged with --gan and --head"))
        try:
            arr = await self._image(image, CFG.inversion_max_pixels)
        except serving.RequestError as e:
            return _error(e)
        t0 = time.monotonic()
        try:  # waiting requests queue here, not in threads, so the fast endpoints keep their thread pool
            await asyncio.wait_for(self._inversion_turn.acquire(), CFG.inversion_timeout_s)
        except asyncio.TimeoutError:  # noqa: UP041 - not TimeoutError's alias before Python 3.11
            busy = serving.InversionBusy(f"another inversion is running; none finished within "
                                         f"{CFG.inversion_timeout_s:g} s")
            return JSONResponse({"error": str(busy), "status": 503}, status_code=503, headers={"Retry-After": "10"})
        try:
            left = max(CFG.inversion_timeout_s - (time.monotonic() - t0), 0.1)
            mask, psnr = await asyncio.to_thread(self.inversion.run, arr, CFG.inversion_steps, left)
        except serving.InversionBusy as e:
            return JSONResponse({"error": str(e), "status": 503}, status_code=503, headers={"Retry-After": "10"})
        except serving.InversionTimeout as e:
            return JSONResponse({"error": str(e), "status": 504}, status_code=504)
        except serving.InversionFailed as e:
            return JSONResponse({"error": f"the inversion failed: {e}", "status": 500}, status_code=500)
        finally:
            self._inversion_turn.release()
        png = await asyncio.to_thread(serving.mask_png, mask, self.labels)
        return Response(png, media_type="image/png",
                        headers={"X-Inversion-PSNR-dB": f"{psnr:.2f}", "X-Inversion-Steps": str(CFG.inversion_steps),
                                 "X-Inversion-Seconds": f"{time.monotonic() - t0:.2f}"})

    @bentoml.api(route="/info")
    async def info(self) -> Info:
        """The served model: tag, classes (index, name, colour), backend, batching and limits."""
        try:
            desc = await self._backend()
        except serving.RequestError as e:
            return _error(e)
        return Info(**desc, classes=self.labels.to_dict()["classes"], inversion=self.inversion is not None,
                    config={k: v for k, v in CFG.to_dict().items() if k in INFO_KEYS})

    @bentoml.on_shutdown
    def _close(self) -> None:
        if self.inversion is not None:
            self.inversion.close()


# ------------------------------------------------------------------------------------------------ the guard

ENDPOINTS = {  # what each endpoint takes; the guard refuses anything else before BentoML parses it
    "/predict": serving.Endpoint(serving.FormSpec("image", {})),
    "/predict_json": serving.Endpoint(serving.FormSpec("image", {"rle": "bool"})),
    "/overlay": serving.Endpoint(serving.FormSpec("image", {"alpha": "unit"})),
    "/predict_inversion": serving.Endpoint(serving.FormSpec("image", {})),
    "/info": serving.Endpoint(None),
}
PASSTHROUGH = frozenset({"/", "/livez", "/healthz", "/readyz", "/metrics", "/schema.json"})  # BentoML's own
PASSTHROUGH_PREFIXES = ("/static_content/", "/assets/")
IMAGE_ERRORS = [400, 405, 408, 413, 415, 422, 503, 504]
STATUSES = {"/predict": IMAGE_ERRORS, "/predict_json": IMAGE_ERRORS, "/overlay": IMAGE_ERRORS,
            "/predict_inversion": sorted([*IMAGE_ERRORS, 404, 500]), "/info": [400, 405, 408, 413, 503, 504],
            "/readyz": [503]}
ADMISSION = serving.Admission(CFG.max_queue, int(CFG.max_buffered_mb * 2**20))


def _install_guard() -> None:
    """Wrap the front service's ASGI app (built by BentoML's ServiceAppFactory) in serving.Guard, outside all of
    BentoML's layers; the model service, reached only by the front, is left as it is."""
    from _bentoml_impl.server.app import ServiceAppFactory

    routes = {api.route for api in Segmenter.apis.values()}
    if routes != set(ENDPOINTS):
        raise RuntimeError(f"serve/service.py: ENDPOINTS {sorted(ENDPOINTS)} differ from the API routes "
                           f"{sorted(routes)}: say what each endpoint takes")
    if bentoml.__version__ != serving.guard.GUARDED_BENTOML:
        logger.warning("partseg: BentoML %s, the guard was checked against %s; run tests/test_serve_guard.py",
                       bentoml.__version__, serving.guard.GUARDED_BENTOML)
    build = ServiceAppFactory.__call__
    if getattr(build, "partseg_guard", False):
        return

    def guarded(factory: ServiceAppFactory) -> Any:
        app = build(factory)
        if factory.service.name != Segmenter.name:
            return app
        return serving.Guard(app, ENDPOINTS, PASSTHROUGH, PASSTHROUGH_PREFIXES, CFG.max_upload_bytes, ADMISSION,
                             CFG.retry_after_s, spec=lambda: serving.patch_spec(factory.service.openapi_spec.asdict(),
                                                                                STATUSES))

    guarded.partseg_guard = True  # type: ignore[attr-defined]
    ServiceAppFactory.__call__ = guarded  # type: ignore[method-assign]


_install_guard()
