"""Atomic writes: the target is either the old file or the new one, and gets the mode a plain open() would."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from partseg.atomic import atomic_path, atomic_write_text
from partseg.weights_io import write_safetensors


def _expected_mode() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def test_outputs_get_the_umask_mode_even_from_writers_that_make_private_files(tmp_path):
    atomic_write_text("x", tmp_path / "a.txt")
    write_safetensors(tmp_path / "w.safetensors", {"a": torch.zeros(2)}, {"format": "test"})  # writes 0o600 itself
    for name in ("a.txt", "w.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == _expected_mode(), name


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]
