"""The BentoML service of partseg (see service.py and README.md)."""
