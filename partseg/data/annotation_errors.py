"""Errors of annotation import, apart from the readers so that leaf modules (the COCO RLE codec, which the
service uses too) can raise them without loading every format reader."""

from __future__ import annotations


class AnnotationError(ValueError):
    """An annotation that cannot be imported as it is; the message names the file and the problem."""


class EmptyMaskError(AnnotationError):
    """An annotation that labels no pixel with a part class (an image nobody annotated yet, usually)."""


class AnnotationWarning(UserWarning):
    """Something left out of an import on purpose (for example an empty mask with skip_empty=True)."""
