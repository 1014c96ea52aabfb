"""A browser labeller for annotation kits: `partseg annotate ui KIT`.

A local web page (served by the standard library, no front-end build step, no external requests) to paint the
part masks of a kit's images straight into the kit's canonical layout (`masks/NAME.png`, palette PNGs of class
indices), saved atomically after every change. See `partseg.labeller.handler` for the HTTP API.
"""

from partseg.labeller.kit import LabellerApp
from partseg.labeller.server import run_labeller, serve, start_labeller

__all__ = ["LabellerApp", "run_labeller", "serve", "start_labeller"]
