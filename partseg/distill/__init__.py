"""Auto-shot stage: generated images labelled by a few-shot head train a UNet that needs no GAN."""

from partseg.distill.autoshot import DistillConfig, distill, make_pairs
from partseg.distill.unet import UNet

__all__ = ["DistillConfig", "UNet", "distill", "make_pairs"]
