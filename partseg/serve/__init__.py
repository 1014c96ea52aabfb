"""What the HTTP service does, without the HTTP: configuration, upload checks, the request guard in front of
BentoML, PNG/JSON answers, COCO RLE, packaging into BentoML's model store, backend choice and the GAN-inversion
worker.

`partseg.serve.service` is the thin BentoML layer over the other modules (not imported here). Importing this
package needs numpy and Pillow only; torch, onnxruntime and bentoml are imported inside the functions that need
them, so everything here can be tested without a server. The names below are the package's public API
(`from partseg import serve; serve.decode_image(...)`).
"""

from partseg.serve.answers import class_stats, encode_coco_rle, mask_png, prediction_json, rgb_png
from partseg.serve.bundle import (
                     KIND_OF_SUFFIX,
                     ORDER,
                     Artefact,
                     Bundle,
                     Loaded,
                     candidates,
                     load_segmenter,
                     package_model,
                     stage_bundle,
)
from partseg.serve.coalesce import Coalescer
from partseg.serve.config import (
                     BUNDLE_FILE,
                     BUNDLE_FORMAT,
                     CONFIG_ENV,
                     DEFAULT_MODEL_NAME,
                     ENV_PREFIX,
                     ServeConfig,
                     gpu_requested,
)
from partseg.serve.forms import FormSpec, check_form, encode_form, parse_form
from partseg.serve.guard import Admission, Endpoint, Guard
from partseg.serve.inversion import (
                     InversionBusy,
                     InversionFailed,
                     InversionRunner,
                     InversionTimeout,
                     inversion_worker_main,
                     invert_image,
)
from partseg.serve.metrics import BATCH_METRIC, BENTOML_BATCH_METRIC, batch_buckets, histogram_counts, histogram_sizes
from partseg.serve.openapi import patch_spec
from partseg.serve.uploads import (
                     GENERIC_TYPES,
                     IMAGE_FORMATS,
                     IMAGE_TYPES,
                     Disabled,
                     RequestError,
                     TooLarge,
                     Unavailable,
                     Unprocessable,
                     UnsupportedType,
                     check_content_type,
                     decode_image,
                     install_pixel_limit,
)

__all__ = [
    "Admission", "Coalescer", "Endpoint", "FormSpec", "Guard", "Unavailable", "Unprocessable", "check_form",
    "encode_form", "parse_form", "patch_spec",
    "BATCH_METRIC", "BENTOML_BATCH_METRIC", "BUNDLE_FILE", "BUNDLE_FORMAT", "CONFIG_ENV", "DEFAULT_MODEL_NAME",
    "ENV_PREFIX", "GENERIC_TYPES", "IMAGE_FORMATS", "IMAGE_TYPES", "KIND_OF_SUFFIX", "ORDER", "Artefact", "Bundle",
    "Disabled", "InversionBusy", "InversionFailed", "InversionRunner", "InversionTimeout", "Loaded", "RequestError",
    "ServeConfig", "TooLarge", "UnsupportedType", "batch_buckets", "candidates", "check_content_type",
    "class_stats", "decode_image", "encode_coco_rle", "gpu_requested", "histogram_counts", "histogram_sizes",
    "install_pixel_limit", "invert_image", "inversion_worker_main", "load_segmenter", "mask_png", "package_model",
    "prediction_json", "rgb_png", "stage_bundle",
]
