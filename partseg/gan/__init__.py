"""StyleGAN2 generator/discriminator, checkpoint loaders and training."""

from partseg.gan.checkpoints import load_generator, save_generator
from partseg.gan.discriminator import Discriminator
from partseg.gan.state import CheckpointFormatError
from partseg.gan.stylegan2 import (
    Generator,
    GeneratorConfig,
    channel_table,
    rosinality_channel_table,
)

__all__ = [
    "CheckpointFormatError",
    "Discriminator",
    "Generator",
    "GeneratorConfig",
    "channel_table",
    "load_generator",
    "rosinality_channel_table",
    "save_generator",
]
