"""Annotation kits out, annotations in: the bridge between partseg and the tools people label with.

`partseg.fewshot.kit.export_kit` writes generated images with the exact latents that regenerate them, plus
everything an annotator needs at once (README, LabelMe label list, CVAT and Label Studio label configs).
`import_annotations` reads what comes back (PNG masks, LabelMe, CVAT for images 1.1, COCO, CelebAMask-HQ part
masks) and writes ONE canonical set in the data-set layout of `partseg.data.dataset`, carrying the kit's latents
over for exactly the annotated images so the GAN features can be recomputed.

One module per concern: `base` (errors, parsed annotations, output folders), `rasterize` (shapes to pixels, and
the geometry convention every vector format follows), `rle` (COCO RLE), one reader per format (`png`,
`labelme`, `cvat`, `coco`, `celebamask`), `kit` (the kit's files and reading a kit back) and `importer`.
"""

from partseg.data.annotations.base import (
    FORMATS,
    IGNORE_NAME,
    LABELME_BACKGROUND,
    OVERLAP,
    UNLABELLED,
    Annotation,
    AnnotationError,
    AnnotationWarning,
    EmptyMaskError,
    Layer,
    build_then_move,
    check_out_folder,
)
from partseg.data.annotations.celebamask import (
    CELEBAMASK_PARTS,
    CELEBAMASK_TO_FACES,
    celebamask_mapping,
    read_celebamask_hq,
)
from partseg.data.annotations.coco import read_coco
from partseg.data.annotations.cvat import read_cvat
from partseg.data.annotations.importer import import_annotations
from partseg.data.annotations.kit import (
    CVAT_LABELS,
    KIT_README,
    LABEL_STUDIO_CONFIG,
    LABELME_LABELS,
    cvat_labels_json,
    kit_readme,
    label_studio_config,
    labelme_labels_text,
)
from partseg.data.annotations.labelme import read_labelme
from partseg.data.annotations.png import decode_mask_image, read_png
from partseg.data.annotations.rasterize import rasterize_ellipse, rasterize_polygon
from partseg.data.rle import coco_runs, decode_coco_rle, encode_coco_rle

__all__ = [
    "CELEBAMASK_PARTS", "CELEBAMASK_TO_FACES", "CVAT_LABELS", "FORMATS", "IGNORE_NAME", "KIT_README",
    "LABELME_BACKGROUND", "LABELME_LABELS", "LABEL_STUDIO_CONFIG", "OVERLAP", "UNLABELLED", "Annotation",
    "AnnotationError", "AnnotationWarning", "EmptyMaskError", "Layer", "build_then_move", "celebamask_mapping",
    "check_out_folder", "coco_runs", "cvat_labels_json", "decode_coco_rle", "decode_mask_image", "encode_coco_rle",
    "import_annotations", "kit_readme", "label_studio_config", "labelme_labels_text", "rasterize_ellipse",
    "rasterize_polygon", "read_celebamask_hq", "read_coco", "read_cvat", "read_labelme", "read_png",
]
