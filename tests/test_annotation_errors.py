"""Annotation import refuses unknown classes, wrong sizes and unknown part names in every format (issue #17) with
a message naming the file, the field (shape, element, annotation id, part) and what was expected; nothing is
written. (LabelMe unknown labels and PNG colours/indices are also covered in test_annotations.py.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from partseg.cli import main
from partseg.data.annotations import AnnotationError, import_annotations
from partseg.labels import FACES
from tests import test_annotations
from tests.test_annotations import C, H, W, corners, cvat_xml, labelme_json, paint, random_image, write_image

imgs = test_annotations.imgs  # the same fixture: two real images in tmp/imgs

VALID = "valid names are background, skin, hair, eye, eyebrow, nose, mouth, ear, neck, clothes"


def fails(src: Path, fmt: str, imgs: Path, *patterns: str, **kw) -> str:
    out = src.parent / "never"
    with pytest.raises(AnnotationError) as e:
        import_annotations(src, fmt, FACES, out, images=imgs, **kw)
    msg = str(e.value)
    for p in patterns:
        assert p in msg, msg
    assert not out.exists()
    return msg


def test_cvat_unknown_label_and_wrong_size(tmp_path, imgs):
    src = tmp_path / "cvat"
    src.mkdir()
    (src / "annotations.xml").write_text(cvat_xml({"a": [(C["skin"], 2, 2, 20, 16)]}).replace(
        'label="skin"', 'label="whiskers"'))
    fails(src, "cvat", imgs, f"{src / 'annotations.xml'}: image 'a.png' element 1: class name 'whiskers' is not in "
                             f"LABELS", VALID)
    (src / "annotations.xml").write_text(cvat_xml({"a": [(C["skin"], 2, 2, 20, 16)]}).replace(
        f'width="{W}"', f'width="{W + 5}"'))
    fails(src, "cvat", imgs, f"{src / 'annotations.xml'}: image 'a.png': size mismatch: the annotation is "
                             f"{W + 5}x{H} (WxH) but its image", f"is {W}x{H}")


def test_coco_unknown_category_missing_id_and_wrong_sizes(tmp_path, imgs):
    path = tmp_path / "coco.json"
    ann = {"id": 7, "image_id": 1, "category_id": 3, "segmentation": [sum(corners(2, 2, 5, 5), [])]}
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}], "annotations": [ann],
            "categories": [{"id": 3, "name": "whiskers"}]}
    path.write_text(json.dumps(coco))
    fails(path, "coco", imgs, f"{path}: annotation 0 (id 7): class name 'whiskers' is not in LABELS", VALID)
    coco["categories"] = [{"id": 3, "name": "skin"}]
    ann["category_id"] = 4
    path.write_text(json.dumps(coco))
    fails(path, "coco", imgs, f"{path}: annotation 0 (id 7): category_id 4 is not in 'categories'")
    ann.update(category_id=3, segmentation={"size": [H + 1, W], "counts": [5, 10]})
    path.write_text(json.dumps(coco))
    fails(path, "coco", imgs, f"{path}: annotation 0 (id 7): size mismatch: RLE size is {W}x{H + 1} (WxH) but "
                              f"image 'a.png' is {W}x{H}")
    ann["segmentation"] = [sum(corners(2, 2, 5, 5), [])]
    coco["images"][0]["width"] = W + 3
    path.write_text(json.dumps(coco))
    fails(path, "coco", imgs, f"{path}: image 'a.png': size mismatch: the annotation is {W + 3}x{H} (WxH)")


def test_celebamask_unknown_part_wrong_size_and_mapping(tmp_path, monkeypatch, capsys):
    root = tmp_path / "CelebAMask-HQ-mask-anno"
    part_dir = root / "0"
    part_dir.mkdir(parents=True)
    imgs = tmp_path / "CelebA-HQ-img"
    write_image(imgs / "0.png", random_image(0))
    Image.fromarray(paint([(255, 0, 0, 5, 5)])).save(part_dir / "00000_whiskers.png")
    fails(root, "celebamask-hq", imgs, f"{part_dir / '00000_whiskers.png'}: not a CelebAMask-HQ part mask: the name "
                                       f"must end in _PART.png with PART one of skin, nose")
    (part_dir / "00000_whiskers.png").unlink()
    Image.fromarray(paint([(255, 0, 0, 5, 5)], h=H + 2)).save(part_dir / "00000_skin.png")
    fails(root, "celebamask-hq", imgs, "00000_*.png: size mismatch: the annotation is "
                                       f"{W}x{H + 2} (WxH) but its image", f"0.png is {W}x{H}")
    Image.fromarray(paint([(255, 0, 0, 5, 5)])).save(part_dir / "00000_skin.png")
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"skin": "fur"}))

    def cli(*extra: str) -> str:
        monkeypatch.setattr(sys, "argv", ["partseg", "annotate", "import", str(root), "--format", "celebamask-hq",
                                          "--images", str(imgs), "--out", str(tmp_path / "out"), *extra])
        with pytest.raises(SystemExit) as e:
            main()
        assert e.value.code == 1
        return capsys.readouterr().err

    err = cli("--mapping", str(mapping))
    assert err.startswith(f"error: {mapping}: CelebAMask-HQ mapping of part 'skin': class name 'fur' is not in LABELS")
    mapping.write_text("{skin: fur")
    assert cli("--mapping", str(mapping)).startswith(f"error: {mapping}: not valid JSON")
    mapping.write_text("[1, 2]")
    assert "expected a JSON object" in cli("--mapping", str(mapping))
    assert not (tmp_path / "out").exists()


def test_labelme_unknown_label_is_named_with_its_shape(tmp_path, imgs):
    src = tmp_path / "lm"
    src.mkdir()
    j = labelme_json([(C["skin"], 2, 2, 20, 16), (C["hair"], 0, 0, 27, 4)], "../imgs/a.png")
    j["shapes"][1]["label"] = "Whiskers"
    (src / "a.json").write_text(json.dumps(j))
    fails(src, "labelme", imgs, f"{src / 'a.json'}: shape 1: class name 'Whiskers' is not in LABELS", VALID)
    j = labelme_json([(C["skin"], 2, 2, 20, 16)], "../imgs/a.png", h=H + 4)
    (src / "a.json").write_text(json.dumps(j))
    fails(src, "labelme", imgs, f"{src / 'a.json'}: size mismatch: the annotation is {W}x{H + 4} (WxH)")
