"""Few-shot stage: heads on generator features, trained from k annotated samples; inversion for real images."""

from partseg.fewshot.invert import Inversion, InversionConfig, invert
from partseg.fewshot.learner import FewShotConfig, FewShotHead, Shots, load_shots, train_head
from partseg.fewshot.segment import segment_by_inversion

__all__ = ["FewShotConfig", "FewShotHead", "Inversion", "InversionConfig", "Shots", "invert", "load_shots",
           "segment_by_inversion", "train_head"]
