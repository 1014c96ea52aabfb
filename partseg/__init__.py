"""partseg: few-shot semantic part segmentation from a GAN's activations."""

__version__ = "0.1.0"
