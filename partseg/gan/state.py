"""What every generator loader shares (ours, rosinality, NVIDIA): the error for a malformed checkpoint and the
strict build of our Generator from a converted state dict. Loaders import this, never each other."""

from __future__ import annotations

import torch

from partseg.gan.stylegan2 import Generator, GeneratorConfig


class CheckpointFormatError(ValueError):
    """A checkpoint does not have the structure its format requires."""


def generator_from_state(cfg: GeneratorConfig, sd: dict[str, torch.Tensor], where: str) -> Generator:
    """Build a Generator and load sd strictly, with shape errors that name the file and the key."""
    G = Generator(cfg)
    own = G.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise CheckpointFormatError(f"{where}: state dict does not match the generator: missing {missing[:8]}, "
                                    f"unexpected {unexpected[:8]}")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointFormatError(f"{where}: '{k}' has shape {tuple(v.shape)}, expected "
                                        f"{tuple(own[k].shape)}")
    G.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    return G.eval().requires_grad_(False)
