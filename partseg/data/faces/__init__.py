"""Procedural face portraits with exact per-pixel part masks: partseg's own measurable world (issue #3).

Why a renderer: few-shot part segmentation is only measurable with ground truth for every generated image. A
StyleGAN2 is trained on these images, a supervised "label oracle" on the masks, and few-shot heads are scored
against both. So the domain must be (a) hard in the ways real part segmentation is hard (parts without colour
boundaries, pose, occluders, clutter, lighting), (b) smooth and coherent enough for a small GAN at 64 px and
(c) cheap: vectorised numpy on a coordinate grid, thousands of images a minute on 2 cores.

How: `sample_params(seed)` draws a `FaceParams` from `numpy.random.default_rng(seed)`; `draw` paints layers back
to front (background < clothes < back hair < neck < far ear < skin < near ear < nose < mouth < eyes < eyebrows <
glasses < front hair < hat) on a grid supersampled `ss` times; each layer writes colour and class index
together, so the mask is exact by construction. The image is box-downsampled (anti-aliasing); the mask takes
the majority class of each pixel's ss x ss samples. Lighting, blur, noise and colour cast come last and never
touch the mask.

Geometry lives in "face units" (head half-width about 1, y down, origin between the eyes). Yaw is a cylinder
model: a feature at surface angle s appears at x = R sin(s + yaw), so features slide sideways and the far ones
foreshorten; the chin and nose tip move further than the eyes, the far ear hides behind the cheek.

Modules, in the order a face is made: `params` (FaceParams, sample_params) and `colours`, `aligned` (the
FFHQ-style pose of the same identity), `canvas` (grid, cylinder model, lighting), `body` and `parts` (the layers,
back to front), `render` (draw, downsample, effects, batches), `floors` (how far colour alone gets).
"""

from partseg.data.faces.aligned import (
    ALIGNED_STREAM,
    EYE_Y,
    IOD,
    IOD_JITTER,
    MODES,
    aligned_params,
    eye_distance,
    eye_midpoint,
    params_for,
)
from partseg.data.faces.canvas import placement
from partseg.data.faces.colours import HAIR_COLORS, IRIS_COLORS, LIP_TONES, Color
from partseg.data.faces.floors import colour_floor
from partseg.data.faces.params import (
    BACKGROUND,
    CLOTHES,
    EAR,
    EYE,
    EYEBROW,
    HAIR,
    HAIR_STYLES,
    MIN_SIZE,
    MOUTH,
    NECK,
    NOSE,
    SKIN,
    FaceParams,
    sample_params,
)
from partseg.data.faces.render import draw, finish, render_batch, render_face, render_params

__all__ = [
    "ALIGNED_STREAM", "BACKGROUND", "CLOTHES", "EAR", "EYE", "EYEBROW", "EYE_Y", "HAIR", "HAIR_COLORS", "HAIR_STYLES",
    "IOD", "IOD_JITTER", "IRIS_COLORS", "LIP_TONES", "MIN_SIZE", "MODES", "MOUTH", "NECK", "NOSE", "SKIN", "Color",
    "FaceParams", "aligned_params", "colour_floor", "draw", "eye_distance", "eye_midpoint", "finish", "params_for",
    "placement", "render_batch", "render_face", "render_params", "sample_params",
]
