"""`partseg predict` over a folder where some images are broken (issue #17): every good image gets its outputs,
the bad ones are listed with their reasons (stderr and predictions.json), and the exit code is non-zero."""

from __future__ import annotations

import json
import struct
import sys
import zlib

import numpy as np
from PIL import Image

from partseg.cli import main


def _png_bomb(path, width: int, height: int) -> None:
    """A tiny PNG whose header claims width x height pixels: a decompression bomb to PIL."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def test_predict_keeps_going_past_broken_images(unet_file, tmp_path, monkeypatch, capsys):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    good = []
    for i, (h, w) in enumerate([(64, 64), (40, 72), (100, 50), (64, 64)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(src / f"good{i}.png")
        good.append(f"good{i}")
    full = (src / "good0.png").read_bytes()
    (src / "bad_truncated.png").write_bytes(full[:len(full) // 2])
    (src / "bad_text.png").write_text("this is not an image\n")
    (src / "bad_empty.jpg").write_bytes(b"")
    _png_bomb(src / "bad_bomb.png", 20000, 20000)
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["partseg", "predict", str(src), "--unet", str(unet_file), "--out", str(out),
                                      "--backend", "torch"])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    text = capsys.readouterr()
    text = text.out + text.err
    assert code == 1, text
    assert "Traceback" not in text
    assert sorted(p.stem for p in (out / "labels").glob("*.png")) == good
    assert sorted(p.stem for p in (out / "overlays").glob("*.png")) == good
    assert "segmented 4 images" in text and "4 of 8 images could not be segmented" in text
    pred = json.loads((out / "predictions.json").read_text())
    assert sorted(r["name"] for r in pred["images"]) == good
    failed = {r["input"].rsplit("/", 1)[1]: r["error"] for r in pred["failed"]}
    assert sorted(failed) == ["bad_bomb.png", "bad_empty.jpg", "bad_text.png", "bad_truncated.png"]
    assert "truncated" in failed["bad_truncated.png"]
    assert "cannot identify image file" in failed["bad_text.png"]
    assert "DecompressionBomb" in failed["bad_bomb.png"]
    for name in failed:  # each on its own line of stderr, naming the file
        assert sum(name in ln for ln in text.splitlines()) == 1
