"""COCO RLE (partseg.data.rle): our encoder and decoder agree with pycocotools, the reference
implementation, on the compressed string and on the uncompressed counts list, for random masks and the edge
cases (empty, full, one pixel, the first pixel set, non-square, one row or column, long runs)."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from partseg.data.annotations import AnnotationError, coco_runs, decode_coco_rle, encode_coco_rle

# pycocotools' decode calls np.array(copy=False) on NumPy 2: a deprecation in its code, not a result
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
H, W = 20, 28  # not square, so a transposed mask cannot pass


def runs_by_hand(bits: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts written independently of the library: column-major runs, zeros first."""
    flat = bits.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    return ([0] if flat.size and flat[0] else []) + runs


def edge_cases() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    cases = []
    for h, w in [(1, 1), (1, 9), (9, 1), (H, W), (W, H), (64, 64), (3, 200)]:
        cases += [np.zeros((h, w), bool), np.ones((h, w), bool)]
        for y, x in {(0, 0), (h - 1, w - 1), (h // 2, w // 2), (h - 1, 0), (0, w - 1)}:  # one pixel
            one = np.zeros((h, w), bool)
            one[y, x] = True
            cases += [one, ~one]
        for p in (0.02, 0.5, 0.97):
            bits = rng.random((h, w)) < p
            cases.append(bits)
            first = bits.copy()
            first[0, 0] = True  # runs start with a zero-length run of zeros
            cases.append(first)
    yy, xx = np.mgrid[:150, :170]
    cases.append((yy - 70) ** 2 + (xx - 90) ** 2 < 60 ** 2)  # long runs: many characters, negative deltas
    cases.append((yy // 7 + xx // 11) % 2 == 0)  # checkerboard of blocks: many short runs
    return cases


CASES = edge_cases()


def reference(bits: np.ndarray) -> dict:
    return coco_mask.encode(np.asfortranarray(bits.astype(np.uint8)))


@pytest.mark.parametrize("k", range(len(CASES)))
def test_encoder_and_decoder_match_pycocotools(k: int) -> None:
    bits = CASES[k]
    h, w = bits.shape
    ref = reference(bits)
    ours = encode_coco_rle(bits)
    assert ours == {"size": [h, w], "counts": ref["counts"].decode("ascii")}  # the compressed string, exactly
    assert ours["size"] == list(ref["size"])
    for counts in (ref["counts"], ours["counts"]):  # bytes as pycocotools holds it, str as JSON carries it
        np.testing.assert_array_equal(decode_coco_rle(counts, h, w), bits)
    np.testing.assert_array_equal(coco_mask.decode(dict(ours, counts=ours["counts"].encode())).astype(bool), bits)
    # the uncompressed counts list: pycocotools compresses ours to its own string and decodes it to the mask
    runs = coco_runs(bits)
    assert runs == runs_by_hand(bits)
    assert sum(runs) == h * w and sum(runs[1::2]) == int(bits.sum()) == int(coco_mask.area(ref))
    theirs = coco_mask.frPyObjects({"size": [h, w], "counts": runs}, h, w)
    assert theirs["counts"] == ref["counts"]
    np.testing.assert_array_equal(coco_mask.decode(theirs).astype(bool), bits)
    np.testing.assert_array_equal(decode_coco_rle(runs, h, w), bits)


def test_empty_image_encodes_like_pycocotools() -> None:
    for shape in [(0, 5), (5, 0), (0, 0)]:
        bits = np.zeros(shape, bool)
        assert encode_coco_rle(bits) == {"size": list(shape), "counts": reference(bits)["counts"].decode()} \
            == {"size": list(shape), "counts": "0"}
        assert decode_coco_rle("0", *shape).shape == shape


def test_decoder_reads_any_counts_list_like_pycocotools() -> None:
    """Counts as other tools write them: zero-length runs anywhere (not only first), runs of any length."""
    rng = np.random.default_rng(3)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        cuts = np.sort(rng.integers(0, h * w + 1, int(rng.integers(1, 30))))
        runs = np.diff(np.concatenate([[0], cuts, [h * w]])).tolist()  # zeros included when cuts repeat
        theirs = coco_mask.frPyObjects({"size": [h, w], "counts": runs}, h, w)
        want = coco_mask.decode(theirs).astype(bool)
        np.testing.assert_array_equal(decode_coco_rle(runs, h, w), want)
        np.testing.assert_array_equal(decode_coco_rle(theirs["counts"], h, w), want)
        assert encode_coco_rle(want)["counts"] == reference(want)["counts"].decode()


# (size, counts, the string pycocotools 2.0 writes for them): reference vectors for our encoder and decoder
COCO_REFERENCE = [((12, 10), [3, 5, 100, 12], "35T37"), ((30, 20), [0, 70, 30, 5, 400, 1, 2, 92], "0V2n0oMb;LbCk2"),
                  ((50, 40), [1999, 1], "_n11"), ((4, 4), [0, 16], "0`0")]


@pytest.mark.parametrize(("size", "counts", "string"), COCO_REFERENCE)
def test_coco_compressed_rle_matches_pycocotools(size, counts, string) -> None:
    assert encode_coco_rle(decode_coco_rle(counts, *size))["counts"] == string  # the service's encoder
    np.testing.assert_array_equal(decode_coco_rle(string, *size), decode_coco_rle(counts, *size))
    assert decode_coco_rle(counts, *size).sum() == sum(counts[1::2])
    assert coco_mask.frPyObjects({"size": list(size), "counts": counts}, *size)["counts"] == string.encode()


def test_coco_rle_round_trip_and_column_major_order() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        bits = rng.random((H, W)) > rng.random()
        np.testing.assert_array_equal(decode_coco_rle(runs_by_hand(bits), H, W), bits)
        np.testing.assert_array_equal(decode_coco_rle(encode_coco_rle(bits)["counts"], H, W), bits)
    first_column = decode_coco_rle([0, H, H * W - H], H, W)
    assert first_column[:, 0].all() and not first_column[:, 1:].any()
    with pytest.raises(AnnotationError, match="cover"):
        decode_coco_rle([1, 2], H, W)


def test_encoder_refuses_a_mask_that_is_not_2d() -> None:
    with pytest.raises(ValueError, match="2-D"):
        encode_coco_rle(np.zeros((2, 3, 4), bool))
