"""StyleGAN2 generator/discriminator, checkpoint loaders and training."""

from .checkpoints import load_generator, save_generator
from .rosinality import CheckpointFormatError
from .stylegan2 import (
    Discriminator,
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
