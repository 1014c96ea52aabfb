"""Annotation kits out and annotations in: every format round-trips a known mask exactly, every validation error
fires with a message that names the problem, and the kit's latents follow the annotated images."""

from __future__ import annotations

import base64
import io
import json
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from partseg.cli import app
from partseg.data.annotations import (
    CELEBAMASK_PARTS,
    CELEBAMASK_TO_FACES,
    AnnotationError,
    AnnotationWarning,
    coco_runs,
    encode_coco_rle,
    import_annotations,
    rasterize_ellipse,
    rasterize_polygon,
)
from partseg.data.dataset import load_dataset, read_image, read_mask, write_image, write_mask
from partseg.fewshot.kit import export_kit
from partseg.gan import Generator, save_generator
from partseg.labels import FACES, IGNORE, Labels

from .conftest import tiny_config

H, W = 20, 28  # not square, so a transposed mask cannot pass
C = {n: i for i, n in enumerate(FACES.names)}
# (class, x0, y0, x1, y1): inclusive pixel ranges, painted in this order (later on top); they overlap on purpose
SHAPES = [
    (C["skin"], 2, 2, 20, 16),
    (C["hair"], 0, 0, 27, 4),
    (C["eye"], 5, 6, 9, 9),
    (C["eye"], 12, 6, 16, 9),
    (C["nose"], 8, 8, 13, 13),  # over both eyes
    (C["mouth"], 6, 14, 14, 17),  # over the skin's bottom edge
    (C["clothes"], 0, 17, 27, 19),  # over the mouth's last row
    (IGNORE, 24, 8, 27, 12),
]


def paint(shapes: list[tuple[int, int, int, int, int]], h: int = H, w: int = W, fill: int = 0) -> np.ndarray:
    mask = np.full((h, w), fill, dtype=np.uint8)
    for cls, x0, y0, x1, y1 in shapes:
        mask[y0:y1 + 1, x0:x1 + 1] = cls
    return mask


def corners(x0: int, y0: int, x1: int, y1: int) -> list[list[float]]:
    """The polygon tracing the outer border of pixels x0..x1, y0..y1 (pixel i spans [i, i+1))."""
    return [[x0, y0], [x1 + 1, y0], [x1 + 1, y1 + 1], [x0, y1 + 1]]


def name_of(cls: int) -> str:
    return "__ignore__" if cls == IGNORE else FACES.names[cls]


def random_image(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def imgs(tmp_path: Path) -> Path:
    """Two real images, a.png and b.png, in tmp/imgs."""
    d = tmp_path / "imgs"
    for i, n in enumerate(("a", "b")):
        write_image(d / f"{n}.png", random_image(i))
    return d


def expected() -> dict[str, np.ndarray]:
    return {"a": paint(SHAPES), "b": paint(SHAPES[::-1][1:])}  # b: another order, so z-order matters


def check_output(out: Path, imgs: Path, want: dict[str, np.ndarray]) -> None:
    labels, items = load_dataset(out)
    assert labels == FACES
    assert [n for n, _, _ in items] == sorted(want)
    for name, img, m in items:
        np.testing.assert_array_equal(read_mask(m, labels, img), want[name], err_msg=name)
        np.testing.assert_array_equal(read_image(img), read_image(imgs / f"{name}.png"))


# ------------------------------------------------------------------------------------------ geometry


def test_rectangle_polygon_covers_exactly_its_pixels() -> None:
    for x0, y0, x1, y1 in [(0, 0, 0, 0), (3, 2, 7, 9), (0, 0, W - 1, H - 1), (26, 18, 27, 19)]:
        np.testing.assert_array_equal(rasterize_polygon(corners(x0, y0, x1, y1), H, W),
                                      paint([(1, x0, y0, x1, y1)]).astype(bool))
    # clockwise or anticlockwise, outside the image or not: the same pixels
    np.testing.assert_array_equal(rasterize_polygon(corners(-5, -5, 3, 3)[::-1], H, W),
                                  paint([(1, 0, 0, 3, 3)]).astype(bool))


def test_shapes_sharing_an_edge_tile_without_gaps_or_double_pixels() -> None:
    square = [[2.0, 1.0], [14.3, 1.0], [14.3, 13.7], [2.0, 13.7]]
    t1 = rasterize_polygon([square[0], square[1], square[2]], H, W)
    t2 = rasterize_polygon([square[0], square[2], square[3]], H, W)
    assert not (t1 & t2).any()
    np.testing.assert_array_equal(t1 | t2, rasterize_polygon(square, H, W))


def test_polygon_fill_is_the_pixel_centre_rule() -> None:
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    for _ in range(50):
        pts = rng.uniform(-3, 30, (int(rng.integers(3, 9)), 2))
        inside = np.zeros((H, W), dtype=bool)  # brute-force even-odd ray casting at every pixel centre
        for (ax, ay), (bx, by) in zip(pts, np.roll(pts, -1, axis=0), strict=True):
            if ay != by:
                crosses = (np.minimum(ay, by) <= ys) & (ys < np.maximum(ay, by))
                inside ^= crosses & (xs >= ax + (ys - ay) * (bx - ax) / (by - ay))
        np.testing.assert_array_equal(rasterize_polygon(pts, H, W), inside)


def test_ellipse_is_the_pixel_centre_rule() -> None:
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    np.testing.assert_array_equal(rasterize_ellipse(10, 8, 5.5, 3, H, W),
                                  ((xs - 10) / 5.5) ** 2 + ((ys - 8) / 3) ** 2 <= 1)


# ------------------------------------------------------------------------------------------ round trips


def test_png_index_colour_and_greyscale_masks_round_trip(tmp_path: Path, imgs: Path) -> None:
    want = expected()
    src = tmp_path / "png"
    write_mask(src / "a.png", want["a"], FACES)  # palette PNG as partseg writes it
    Image.fromarray(want["b"], "L").save(src / "b.png")  # greyscale class indices
    out = import_annotations(src, "png", FACES, tmp_path / "out", images=imgs)
    check_output(out, imgs, want)

    src2 = tmp_path / "png_rgb"
    src2.mkdir()
    Image.fromarray(FACES.colorize(want["a"])).save(src2 / "a.png")  # colour-coded, white = unlabelled
    perm = np.random.default_rng(0).permutation(256).astype(np.uint8)  # a palette PNG with another ordering
    im = Image.fromarray(perm[want["b"]], "P")
    pal = np.zeros((256, 3), dtype=np.uint8)
    pal[perm] = FACES.colorize(np.arange(256, dtype=np.uint8))
    im.putpalette(pal.ravel().tolist())
    im.save(src2 / "b.png")
    check_output(import_annotations(src2, "png", FACES, tmp_path / "out2", images=imgs), imgs, want)


def labelme_json(shapes, image_path: str, h: int = H, w: int = W) -> dict:
    out = []
    for k, (cls, x0, y0, x1, y1) in enumerate(shapes):
        if k % 3 == 1:  # some as LabelMe rectangles (two opposite corners)
            out.append({"label": name_of(cls), "points": [[x1 + 1, y1 + 1], [x0, y0]], "shape_type": "rectangle"})
        elif k % 3 == 2:  # some as LabelMe masks (a base64 PNG of the box between two inclusive pixel corners)
            buf = io.BytesIO()
            Image.fromarray(np.full((y1 - y0 + 1, x1 - x0 + 1), 255, dtype=np.uint8)).save(buf, format="PNG")
            out.append({"label": name_of(cls), "points": [[x0, y0], [x1, y1]], "shape_type": "mask",
                        "mask": base64.b64encode(buf.getvalue()).decode()})
        else:
            out.append({"label": name_of(cls), "points": corners(x0, y0, x1, y1), "group_id": None,
                        "description": "", "shape_type": "polygon", "flags": {}})
    return {"version": "5.5.0", "flags": {}, "shapes": out, "imagePath": image_path, "imageData": None,
            "imageHeight": h, "imageWidth": w}


def test_labelme_round_trip(tmp_path: Path, imgs: Path) -> None:
    src = tmp_path / "labelme"
    src.mkdir()
    (src / "a.json").write_text(json.dumps(labelme_json(SHAPES, "../imgs/a.png")))
    (src / "b.json").write_text(json.dumps(labelme_json(SHAPES[::-1][1:], "..\\imgs\\b.png")))  # from Windows
    out = import_annotations(src, "labelme", FACES, tmp_path / "out")  # images found through imagePath
    check_output(out, imgs, expected())


def test_labelme_embedded_image_and_circle(tmp_path: Path, imgs: Path) -> None:
    d = labelme_json([SHAPES[0]], "elsewhere/c.png")
    d["shapes"].append({"label": "eye", "points": [[10, 8], [13, 12]], "shape_type": "circle"})
    d["imageData"] = base64.b64encode((imgs / "a.png").read_bytes()).decode()
    (tmp_path / "c.json").write_text(json.dumps(d))
    out = import_annotations(tmp_path / "c.json", "labelme", FACES, tmp_path / "out")
    want = paint([SHAPES[0]])
    want[rasterize_ellipse(10, 8, 5, 5, H, W)] = C["eye"]
    np.testing.assert_array_equal(read_mask(out / "masks" / "c.png"), want)
    np.testing.assert_array_equal(read_image(out / "images" / "c.png"), read_image(imgs / "a.png"))


def cvat_rle(bits: np.ndarray) -> str:
    """CVAT brush-mask runs: row by row over the mask's box, zeros first."""
    flat = bits.ravel().astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    return ", ".join(map(str, ([0] if flat[0] else []) + runs))


def cvat_xml(images: dict[str, list]) -> str:
    rows = ['<?xml version="1.0" encoding="utf-8"?>', "<annotations>", "  <version>1.1</version>",
            "  <meta><task><name>t</name><mode>annotation</mode></task></meta>"]
    for i, (name, shapes) in enumerate(images.items()):
        rows.append(f'  <image id="{i}" name="{name}.png" width="{W}" height="{H}">')
        rows.append('    <tag label="good_frame" source="manual"></tag>')
        order = list(range(len(shapes)))[::-1]  # written in reverse: only z_order gives the painting order
        for z in order:
            cls, x0, y0, x1, y1 = shapes[z]
            attrs = f'label="{name_of(cls)}" occluded="0" source="manual" z_order="{z}"'
            if z % 3 == 1:
                rows.append(f'    <box {attrs} xtl="{x0:.2f}" ytl="{y0:.2f}" xbr="{x1 + 1:.2f}" ybr="{y1 + 1:.2f}">'
                            f"</box>")
            elif z % 3 == 2:
                bits = np.ones((y1 - y0 + 1, x1 - x0 + 1), dtype=bool)
                bits[0, 0] = False  # a hole in the corner, so the runs are not trivial ...
                rows.append(f'    <mask {attrs} rle="{cvat_rle(bits)}" left="{x0}" top="{y0}" '
                            f'width="{x1 - x0 + 1}" height="{y1 - y0 + 1}"></mask>')
                shapes[z] = (cls, x0, y0, x1, y1, (x0, y0))  # ... that the expected mask must know about
            else:
                pts = ";".join(f"{x:.2f},{y:.2f}" for x, y in corners(x0, y0, x1, y1))
                rows.append(f'    <polygon {attrs} points="{pts}"></polygon>')
        rows.append("  </image>")
    rows.append("</annotations>")
    return "\n".join(rows) + "\n"


def paint_with_holes(shapes: list) -> np.ndarray:
    mask = np.zeros((H, W), dtype=np.uint8)
    for s in shapes:
        keep = mask[s[-1][1], s[-1][0]] if len(s) == 6 else None
        mask[s[2]:s[4] + 1, s[1]:s[3] + 1] = s[0]
        if keep is not None:
            mask[s[-1][1], s[-1][0]] = keep
    return mask


def test_cvat_round_trip_respects_z_order(tmp_path: Path, imgs: Path) -> None:
    shapes = {"a": list(SHAPES), "b": list(SHAPES[::-1][1:])}
    src = tmp_path / "cvat"
    src.mkdir()
    (src / "annotations.xml").write_text(cvat_xml(shapes))
    out = import_annotations(src, "cvat", FACES, tmp_path / "out", images=imgs)
    check_output(out, imgs, {n: paint_with_holes(s) for n, s in shapes.items()})


def test_coco_round_trip_polygons_and_both_rles(tmp_path: Path, imgs: Path) -> None:
    cats = [{"id": 10 + i, "name": n, "supercategory": ""} for i, n in enumerate(FACES.names)]
    cats.append({"id": 99, "name": "__ignore__"})
    cat_id = {c["name"]: c["id"] for c in cats}
    anns = []
    for image_id, shapes in ((1, SHAPES), (2, SHAPES[::-1][1:])):
        for k, (cls, x0, y0, x1, y1) in enumerate(shapes):
            a = {"id": len(anns) + 1, "image_id": image_id, "category_id": cat_id[name_of(cls)], "iscrowd": 0,
                 "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1], "area": (x1 - x0 + 1) * (y1 - y0 + 1)}
            bits = paint([(1, x0, y0, x1, y1)]).astype(bool)
            if k % 3 == 1:  # uncompressed RLE, as COCO writes crowd regions
                a.update(iscrowd=1, segmentation={"size": [H, W], "counts": coco_runs(bits)})
            elif k % 3 == 2:  # compressed RLE string
                a["segmentation"] = {"size": [H, W], "counts": encode_coco_rle(bits)["counts"]}
            else:  # the region split in two polygons: one annotation, their union
                xm = (x0 + x1) // 2
                a["segmentation"] = [sum(corners(x0, y0, xm, y1), []), sum(corners(xm, y0, x1, y1), [])]
            anns.append(a)
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": W, "height": H},
                       {"id": 2, "file_name": "images/b.png", "width": W, "height": H}],
            "annotations": anns, "categories": cats}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    out = import_annotations(tmp_path / "coco.json", "coco", FACES, tmp_path / "out", images=imgs)
    check_output(out, imgs, expected())


def test_celebamask_hq_round_trip_in_the_official_order(tmp_path: Path) -> None:
    # parts as (part, x0, y0, x1, y1); the painting order is CELEBAMASK_PARTS, not this list's order
    parts = [("hair", 0, 0, 27, 5), ("skin", 2, 2, 20, 16), ("l_eye", 5, 6, 9, 9), ("r_eye", 12, 6, 16, 9),
             ("eye_g", 4, 5, 18, 10), ("nose", 8, 8, 13, 13), ("u_lip", 6, 14, 14, 15), ("l_lip", 6, 16, 14, 17),
             ("neck", 6, 17, 14, 19), ("cloth", 0, 18, 27, 19), ("l_ear", 0, 7, 1, 12)]
    imgs = tmp_path / "CelebA-HQ-img"
    want = {}
    for i in (0, 1):
        write_image(imgs / f"{i}.png", random_image(i))
        mine = parts if i == 0 else parts[1:]
        folder = tmp_path / "CelebAMask-HQ-mask-anno" / str(i // 2000)
        for part, x0, y0, x1, y1 in mine:
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(paint([(255, x0, y0, x1, y1)])).save(folder / f"{i:05d}_{part}.png")
        ordered = sorted(mine, key=lambda p: CELEBAMASK_PARTS.index(p[0]))
        want[str(i)] = paint([(C[CELEBAMASK_TO_FACES[p]], *box) for p, *box in ordered])
    assert (want["0"][6, 5] == C["eye"]) and (want["0"][0, 10] == C["hair"])  # eyes over glasses, hair over skin
    out = import_annotations(tmp_path / "CelebAMask-HQ-mask-anno", "celebamask-hq", FACES, tmp_path / "out",
                             images=imgs)
    check_output(out, imgs, want)


# ------------------------------------------------------------------------------------------ validation


def test_validation_errors_name_the_file_and_the_problem(tmp_path: Path, imgs: Path) -> None:
    def fails(src: Path, fmt: str, match: str, **kw) -> None:
        out = tmp_path / "never"
        with pytest.raises(AnnotationError, match=match):
            import_annotations(src, fmt, FACES, out, images=imgs, **kw)
        assert not out.exists() and not list(tmp_path.glob(".never.*"))  # nothing half-written

    def folder(name: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        return d

    good = paint(SHAPES)
    d = folder("small")
    write_mask(d / "a.png", good[:-1], FACES)
    fails(d, "png", r"a\.png.*size mismatch: the annotation is 28x19")

    d = folder("colour")
    rgb = FACES.colorize(good)
    rgb[3, 3] = (1, 2, 3)
    Image.fromarray(rgb).save(d / "a.png")
    fails(d, "png", r"a\.png: colour not in LABELS: \(1, 2, 3\) on 1 pixels")

    d = folder("index")
    Image.fromarray(np.where(good == 2, 40, good).astype(np.uint8), "L").save(d / "a.png")
    fails(d, "png", r"mask values \[40\] are not class indices")

    d = folder("jpeg")
    Image.fromarray(rgb).save(d / "a.jpg")
    fails(d, "png", "JPEG masks")

    d = folder("name")
    bad = labelme_json(SHAPES, "../imgs/a.png")
    bad["shapes"][3]["label"] = "eyes"
    (d / "a.json").write_text(json.dumps(bad))
    fails(d, "labelme", r"a\.json: shape 3: class name 'eyes' is not in LABELS; valid names are background, skin, "
                        r"hair, eye")

    d = folder("declared")
    (d / "a.json").write_text(json.dumps(labelme_json(SHAPES, "../imgs/a.png", w=W * 2)))
    fails(d, "labelme", r"a\.json: size mismatch: the annotation is 56x20 \(WxH\) but its image .*a\.png is 28x20")

    d = folder("empty")
    (d / "a.json").write_text(json.dumps(labelme_json([(IGNORE, 0, 0, 3, 3)], "../imgs/a.png")))
    fails(d, "labelme", r"a\.json: empty mask")

    d = folder("overlap")
    (d / "a.json").write_text(json.dumps(labelme_json([SHAPES[0], SHAPES[0], SHAPES[2]], "../imgs/a.png")))
    fails(d, "labelme", r"a\.json: shape 2 \(mask 'eye'\) overlaps shape 1 \(rectangle 'skin'\) on 20 pixels",
          overlap="error")
    assert import_annotations(d, "labelme", FACES, tmp_path / "z", images=imgs)  # same class may overlap; z-order ok

    d = folder("corrupt")
    (d / "a.json").write_text("{not json")
    fails(d, "labelme", r"a\.json: not valid JSON")
    d = folder("corrupt_png")
    (d / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    fails(d, "png", r"a\.png: unreadable image file")
    (tmp_path / "bad.xml").write_text("<annotations><image name='a.png'>")
    fails(tmp_path / "bad.xml", "cvat", r"bad\.xml: unreadable CVAT XML")

    d = folder("line")
    (d / "a.json").write_text(json.dumps({"shapes": [{"label": "hair", "points": [[0, 0], [5, 5]],
                                                      "shape_type": "line"}], "imagePath": "../imgs/a.png"}))
    fails(d, "labelme", r"shape_type 'line' has no area")

    d = folder("noimage")
    write_mask(d / "zzz.png", good, FACES)
    fails(d, "png", r"zzz\.png: no image found for 'zzz'")

    d = folder("many")  # every problem at once, one message
    write_mask(d / "a.png", good[:, :-2], FACES)
    write_mask(d / "b.png", np.zeros((H, W), dtype=np.uint8), FACES)
    fails(d, "png", r"(?s)2 problems.*a\.png: size mismatch.*b\.png: empty mask")

    with pytest.raises(AnnotationError, match="unknown format 'yolo'"):
        import_annotations(d, "yolo", FACES, tmp_path / "never")


def test_unlabelled_ignore_skip_empty_and_out_protection(tmp_path: Path, imgs: Path) -> None:
    src = tmp_path / "lm"
    src.mkdir()
    (src / "a.json").write_text(json.dumps(labelme_json(SHAPES[2:4], "../imgs/a.png")))
    (src / "b.json").write_text(json.dumps(labelme_json([], "../imgs/b.png")))  # not annotated yet
    with pytest.warns(AnnotationWarning, match=r"b\.json: empty mask, left out"):
        out = import_annotations(src, "labelme", FACES, tmp_path / "out", unlabelled="ignore", skip_empty=True)
    check_output(out, imgs, {"a": paint(SHAPES[2:4], fill=IGNORE)})

    with pytest.raises(AnnotationError, match="not empty; refusing to overwrite"):
        import_annotations(src, "labelme", FACES, out, skip_empty=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnnotationWarning)
        import_annotations(src, "labelme", FACES, out, skip_empty=True, overwrite=True)
    check_output(out, imgs, {"a": paint(SHAPES[2:4])})
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ------------------------------------------------------------------------------------------ kit


def _generator_source(tmp: Path) -> str:
    """The built-in generator when this install ships it, else a tiny random one saved to a file."""
    from partseg.gan.checkpoints import builtin_path

    try:
        builtin_path("faces64")
        return "builtin:faces64"
    except FileNotFoundError:
        torch.manual_seed(0)
        return str(save_generator(Generator(tiny_config()), tmp / "tiny.safetensors"))


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("kit")
    return export_kit(_generator_source(tmp), 3, 5, FACES, tmp / "kit", truncation=0.7)


def test_kit_holds_images_latents_and_annotator_files(kit: Path) -> None:
    index = json.loads((kit / "samples.json").read_text())
    assert [s["file"] for s in index["samples"]] == [f"images/seed{s:06d}.png" for s in (5, 6, 7)]
    assert index["truncation"] == 0.7 and (kit / "latents.safetensors").is_file()
    readme = (kit / "README.md").read_text()
    assert "Do not resize" in readme and "CVAT for images 1.1" in readme and "COCO" in readme
    for name, c in zip(FACES.names, FACES.colors, strict=True):
        assert f"| {name} | `#{c[0]:02x}{c[1]:02x}{c[2]:02x}` |" in readme
    assert (kit / "labelme_labels.txt").read_text().splitlines() == ["__ignore__", *FACES.names]
    cvat = json.loads((kit / "cvat_labels.json").read_text())
    assert cvat[3] == {"name": "eye", "color": "#00a0ff", "type": "polygon", "attributes": []}
    assert [c["name"] for c in cvat] == list(FACES.names)
    view = ET.fromstring((kit / "label_studio_config.xml").read_text())
    assert view.tag == "View"
    assert view.find("Image").attrib == {"name": "image", "value": "$image"}
    poly = view.find("PolygonLabels")
    assert poly.attrib == {"name": "label", "toName": "image"}
    assert [(e.get("value"), e.get("background")) for e in poly] == [
        (n, "#{:02x}{:02x}{:02x}".format(*c)) for n, c in zip(FACES.names, FACES.colors, strict=True)]


def test_import_into_a_kit_carries_the_latents_over(kit: Path, tmp_path: Path) -> None:
    size = read_image(kit / "images" / "seed000005.png").shape[0]
    src = tmp_path / "masks"
    src.mkdir()
    want = {"seed000007": paint(SHAPES, size, size), "seed000005": paint(SHAPES[::-1][1:], size, size)}
    for n, m in want.items():
        Image.fromarray(FACES.colorize(m)).save(src / f"{n}.png")
    real = tmp_path / "real"
    write_image(real / "photo.png", random_image(3, size, size))
    write_mask(src / "photo.png", paint(SHAPES, size, size), FACES)
    with pytest.raises(AnnotationError, match=r"photo\.png: image 'photo' is not in the kit .*allow-real"):
        import_annotations(src, "png", None, tmp_path / "out", kit, images=real)
    with pytest.raises(AnnotationError, match="differ from the kit"):
        import_annotations(src, "png", Labels(["bg", "x"], [(0, 0, 0), (1, 1, 1)]), tmp_path / "o", kit)

    out = import_annotations(src, "png", None, tmp_path / "out", kit, images=real, allow_real=True)
    labels, items = load_dataset(out)
    assert [n for n, _, _ in items] == ["photo", "seed000005", "seed000007"]
    for n in want:
        np.testing.assert_array_equal(read_mask(out / "masks" / f"{n}.png", labels), want[n])
        np.testing.assert_array_equal(read_image(out / "images" / f"{n}.png"), read_image(kit / "images" / f"{n}.png"))
    index = json.loads((out / "samples.json").read_text())
    by_file = {s["file"]: s for s in index["samples"]}
    assert by_file["images/photo.png"] == {"file": "images/photo.png", "seed": None, "index": None, "latent": None,
                                           "real": True}
    kit_lat, lat = load_file(str(kit / "latents.safetensors")), load_file(str(out / "latents.safetensors"))
    for seed, kit_row in ((5, 0), (7, 2)):
        s = by_file[f"images/seed{seed:06d}.png"]
        assert s["seed"] == seed and not s["real"]
        for k in ("z", "ws", "seeds"):
            assert torch.equal(lat[k][s["index"]], kit_lat[k][kit_row])
    assert lat["z"].shape[0] == 2 and index["truncation"] == 0.7


def test_celebamask_numbers_are_positions_in_the_kit(kit: Path, tmp_path: Path) -> None:
    size = read_image(kit / "images" / "seed000005.png").shape[0]
    src = tmp_path / "anno" / "0"
    src.mkdir(parents=True)
    Image.fromarray(paint([(255, 1, 1, 9, 9)], size, size)).save(src / "00001_skin.png")
    Image.fromarray(paint([(255, 3, 3, 4, 4)], size, size)).save(src / "seed000007_r_brow.png")
    out = import_annotations(tmp_path / "anno", "celebamask-hq", None, tmp_path / "out", kit)
    index = json.loads((out / "samples.json").read_text())
    assert [(s["file"], s["seed"]) for s in index["samples"]] == [("images/seed000006.png", 6),
                                                                   ("images/seed000007.png", 7)]
    assert read_mask(out / "masks" / "seed000007.png")[3, 3] == C["eyebrow"]


# ------------------------------------------------------------------------------------------ cli


runner = CliRunner()


def test_cli_export_and_import(tmp_path: Path) -> None:
    gan = _generator_source(tmp_path)
    r = runner.invoke(app, ["annotate", "export", "--gan", gan, "-n", "2", "--seed", "3", "--out",
                            str(tmp_path / "kit")])
    assert r.exit_code == 0, r.output
    assert "README.md" in r.output
    size = read_image(tmp_path / "kit" / "images" / "seed000003.png").shape[0]
    src = tmp_path / "masks"
    write_mask(src / "seed000004.png", paint(SHAPES, size, size), FACES)
    args = ["annotate", "import", str(src), "--format", "png", "--kit", str(tmp_path / "kit"), "--out",
            str(tmp_path / "shots")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "imported 1 annotated images (1 generated with their latents, 0 real)" in r.output
    r = runner.invoke(app, args)  # the second time --out is not empty
    assert r.exit_code == 1
    assert "refusing to overwrite" in r.output
    r = runner.invoke(app, [*args[:-1], str(tmp_path / "other"), "--unlabelled", "nothing"])
    assert r.exit_code == 1 and "unlabelled must be one of" in r.output
