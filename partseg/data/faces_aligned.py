"""Moved to `partseg.data.faces.aligned` (#18). Kept only while `partseg/data/dataset.py` and `partseg/cli/data.py`
(other owners) still import MODES from here; delete it once they import `partseg.data.faces.MODES`."""

from partseg.data.faces.aligned import MODES  # noqa: F401
