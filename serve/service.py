"""BentoML entry point of a source checkout (`bentofile.yaml`: service "serve.service:Segmenter").

The service lives in the package (partseg.serve.service), so an installed wheel serves too:
`partseg serve start` runs `bentoml serve partseg.serve.service:Segmenter`. See serve/README.md.
"""

from partseg.serve.service import Segmenter, SegmenterModel

__all__ = ["Segmenter", "SegmenterModel"]
