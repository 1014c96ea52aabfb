"""The browser labeller (issue #8): its HTTP API on its own, then the page end-to-end in headless Chromium.

The API tests need nothing but the standard library. The browser test drives Debian's chromium through
chromedriver with Selenium (installed by .ci/run) and is skipped, with the reason, only when those are missing.
Set PARTSEG_LABELLER_SCREENSHOT=docs/labeller.png to also write the screenshot the README shows.
"""

from __future__ import annotations

import io
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from partseg.data.annotations import rasterize_polygon
from partseg.data.dataset import read_image, read_mask, write_image, write_mask, write_sample_set
from partseg.data.faces import render_face
from partseg.labeller import start_labeller
from partseg.labels import FACES, IGNORE, Labels

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SIZE = 64
NAMES = ["face_0", "face_1", "face_2"]


@pytest.fixture
def kit(tmp_path: Path) -> Path:
    """Three procedural faces (64 px) and the face classes: a kit as `annotate export` writes it, minus latents."""
    root = tmp_path / "kit"
    for i, name in enumerate(NAMES):
        write_image(root / "images" / f"{name}.png", render_face(i, SIZE)[0])
    FACES.save(root)
    return root


@pytest.fixture
def server(kit: Path) -> Iterator[str]:
    srv, url = start_labeller(kit)
    try:
        yield url
    finally:
        srv.stop()


def request(url: str, method: str = "GET", body: bytes | None = None, content_type: str | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers) of one request; 4xx/5xx are answers, not exceptions."""
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if content_type is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def png_bytes(arr: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ HTTP API


def test_kit_listing_and_static_page(server: str, kit: Path) -> None:
    status, body, _ = request(server + "api/kit")
    assert status == 200
    info = json.loads(body)
    assert [c["name"] for c in info["labels"]] == list(FACES.names)
    assert info["labels"][2]["color"] == list(FACES.colors[2]) and info["ignore"] == IGNORE
    assert [i["name"] for i in info["images"]] == NAMES
    assert all(i["width"] == SIZE and i["height"] == SIZE and not i["annotated"] for i in info["images"])
    assert info["progress"] == {"annotated": 0, "total": 3}
    assert info["suggest"]["available"] is False and "--head" in info["suggest"]["reason"]

    status, page, headers = request(server)
    assert status == 200 and b'id="view"' in page
    assert "connect-src 'self'" in headers["Content-Security-Policy"]  # the page can only talk to this server
    for name in ("app.js", "style.css"):
        assert request(server + f"static/{name}")[0] == 200
    assert b"http" not in request(server + "static/style.css")[1]  # no web fonts, no external stylesheets
    status, img, headers = request(server + "api/image/face_1")
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert img == (kit / "images" / "face_1.png").read_bytes()
    assert request(server + "api/mask/face_1")[0] == 404  # nothing annotated yet


def test_page_modules_are_served_as_javascript(server: str) -> None:
    """The page is ES modules: a browser runs one only when it comes as JavaScript, and every module another
    imports must be served (a missing one leaves a blank page with no error on the server)."""
    import re

    status, page, _ = request(server)
    assert b'<script type="module" src="/static/app.js">' in page
    seen, todo = set(), ["app.js"]
    while todo:
        name = todo.pop()
        seen.add(name)
        status, body, headers = request(server + f"static/{name}")
        assert status == 200, name
        assert headers["Content-Type"].split(";")[0] == "text/javascript", (name, headers["Content-Type"])
        todo += [m for m in re.findall(r'from "\./([\w-]+\.js)"', body.decode()) if m not in seen]
    static = Path(__file__).resolve().parents[1] / "partseg" / "labeller" / "static"
    assert seen == {p.name for p in static.glob("*.js")}  # each module is in use, and all are reachable
    assert request(server + "static/nope.js")[0] == 404


def test_save_raw_and_png_masks(server: str, kit: Path) -> None:
    mask = np.full((SIZE, SIZE), IGNORE, dtype=np.uint8)
    mask[10:20, 5:30] = 2
    mask[40:50, 40:60] = 9
    status, body, _ = request(server + "api/mask/face_0", "PUT", mask.tobytes(), "application/octet-stream")
    assert status == 200, body
    reply = json.loads(body)
    assert reply["annotated"] is True and reply["progress"] == {"annotated": 1, "total": 3}
    path = kit / "masks" / "face_0.png"
    assert np.array_equal(read_mask(path, FACES, kit / "images" / "face_0.png"), mask)
    with Image.open(path) as im:  # the canonical format: a palette PNG with the label colours
        assert im.mode == "P" and im.getpalette()[6:9] == list(FACES.colors[2])
    status, raw, headers = request(server + "api/mask/face_0?format=raw")
    assert status == 200 and raw == mask.tobytes()
    assert (headers["X-Mask-Width"], headers["X-Mask-Height"]) == (str(SIZE), str(SIZE))
    status, png, _ = request(server + "api/mask/face_0")
    assert status == 200 and png == path.read_bytes()

    # a PNG of class indices (greyscale here) is accepted as well; POST is the same as PUT
    other = np.zeros((SIZE, SIZE), dtype=np.uint8)
    other[:, 32:] = IGNORE
    status, body, _ = request(server + "api/mask/face_2", "POST", png_bytes(other, "L"), "image/png")
    assert status == 200, body
    assert np.array_equal(read_mask(kit / "masks" / "face_2.png", FACES), other)
    # an all-unlabelled mask is saved but does not count as annotated
    empty = np.full((SIZE, SIZE), IGNORE, dtype=np.uint8)
    status, body, _ = request(server + "api/mask/face_2", "PUT", empty.tobytes(), "application/octet-stream")
    assert status == 200 and json.loads(body)["progress"] == {"annotated": 1, "total": 3}
    assert not list((kit / "masks").glob(".*"))  # no temporary files left behind


def test_bad_requests_get_4xx_and_write_nothing(server: str, kit: Path, tmp_path: Path) -> None:
    good = np.full((SIZE, SIZE), IGNORE, dtype=np.uint8)
    good[5:9, 5:9] = 1
    assert request(server + "api/mask/face_0", "PUT", good.tobytes(), "application/octet-stream")[0] == 200
    (tmp_path / "secret.txt").write_text("outside the kit")
    before = files_under(tmp_path)
    raw = "application/octet-stream"
    wrong_class = good.copy()
    wrong_class[0, 0] = len(FACES)  # 10: one past the last class
    rgb = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    cases: list[tuple[str, str, bytes | None, str | None, dict[str, str] | None, tuple[int, ...]]] = [
        # images and masks outside the kit, traversal in every spelling
        ("GET", "api/image/nope", None, None, None, (404,)),
        ("GET", "api/image/../labels", None, None, None, (404,)),
        ("GET", "api/image/..%2Flabels", None, None, None, (404,)),
        ("GET", "api/image/..%2F..%2Fsecret", None, None, None, (404,)),
        ("GET", "api/image/%2Fetc%2Fpasswd", None, None, None, (404,)),
        ("GET", "api/image/%ff", None, None, None, (400, 404)),
        ("GET", "api/mask/..%2Fimages%2Fface_0?format=raw", None, None, None, (404,)),
        ("GET", "static/..%2F..%2Fserver.py", None, None, None, (404,)),
        ("GET", "static/../server.py", None, None, None, (404,)),
        ("PUT", "api/mask/..%2Fsecret", good.tobytes(), raw, None, (404,)),
        ("PUT", "api/mask/..%2F..%2Fsecret", good.tobytes(), raw, None, (404,)),
        ("PUT", "api/mask/../../secret", good.tobytes(), raw, None, (404,)),
        ("PUT", "api/mask/%2Ftmp%2Fpartseg_labeller_test", good.tobytes(), raw, None, (404,)),
        ("PUT", "api/mask/face_9", good.tobytes(), raw, None, (404,)),
        # malformed uploads
        ("PUT", "api/mask/face_0", b"\x89PNG\r\n\x1a\nnot really", "image/png", None, (400,)),
        ("PUT", "api/mask/face_0", b"", raw, None, (400,)),
        ("PUT", "api/mask/face_0", good.tobytes()[:-1], raw, None, (400,)),
        ("PUT", "api/mask/face_0", good.tobytes() + b"\0", raw, None, (400,)),
        ("PUT", "api/mask/face_0", png_bytes(rgb, "RGB"), "image/png", None, (400,)),
        ("PUT", "api/mask/face_0", json.dumps({"mask": 1}).encode(), "application/json", None, (415,)),
        ("PUT", "api/mask/face_0", png_bytes(good, "L"), None, None, (415,)),
        # a class id that is not in labels.json
        ("PUT", "api/mask/face_0", wrong_class.tobytes(), raw, None, (400,)),
        ("PUT", "api/mask/face_0", png_bytes(wrong_class, "L"), "image/png", None, (400,)),
        # the wrong size
        ("PUT", "api/mask/face_0", np.zeros((32, 32), np.uint8).tobytes(), raw, None, (400,)),
        ("PUT", "api/mask/face_0", png_bytes(np.zeros((SIZE, SIZE + 1), np.uint8), "L"), "image/png", None, (400,)),
        # not from this server's page: another Host (DNS rebinding) or another origin
        ("PUT", "api/mask/face_0", good.tobytes(), raw, {"Host": "evil.example:80"}, (403,)),
        ("PUT", "api/mask/face_0", good.tobytes(), raw, {"Origin": "http://evil.example"}, (403,)),
        ("GET", "api/kit", None, None, {"Host": "evil.example"}, (403,)),
        # no suggestions without a head; unknown calls
        ("POST", "api/suggest/face_0", b"", None, None, (409,)),
        ("DELETE", "api/mask/face_0", None, None, None, (501, 405)),
        ("GET", "api/nothing", None, None, None, (404,)),
    ]
    for method, path, body, ctype, headers, expected in cases:
        status, answer, _ = request(server + path, method, body, ctype, headers)
        assert status in expected, (method, path, status, answer[:200])
        if status < 500 and answer:
            assert "error" in json.loads(answer), (method, path)
    assert files_under(tmp_path) == before  # nothing written, inside the kit or outside
    assert not Path("/tmp/partseg_labeller_test.png").exists()
    # the server still works after all that
    assert request(server + "api/mask/face_0?format=raw")[1] == good.tobytes()


def test_stored_mask_that_does_not_fit_is_reported(server: str, kit: Path) -> None:
    write_mask(kit / "masks" / "face_1.png", np.zeros((8, 8), np.uint8), FACES)
    status, body, _ = request(server + "api/mask/face_1?format=raw")
    assert status == 409 and "size mismatch" in json.loads(body)["error"]
    info = json.loads(request(server + "api/kit")[1])
    assert "size mismatch" in info["images"][1]["error"] and not info["images"][1]["annotated"]


def test_start_refuses_a_folder_that_is_not_a_kit(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        start_labeller(tmp_path / "missing")
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="labels.json"):
        start_labeller(tmp_path)
    FACES.save(tmp_path)
    with pytest.raises(ValueError, match="no images"):
        start_labeller(tmp_path)


def test_cli_reports_a_missing_kit(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from partseg.cli import app

    res = CliRunner().invoke(app, ["annotate", "ui", str(tmp_path / "nope"), "--port", "0"])
    assert res.exit_code == 1 and "not found" in res.output


def _head_and_samples(tmp_path: Path, G: Any) -> tuple[Labels, Any, Path, np.ndarray]:
    """(labels, 2 samples of G (seeds 3, 4), a 3-class head trained a few steps on them, its prediction for
    seed 4): a kit of these samples can offer suggestions."""
    import torch

    from partseg.fewshot.learner import FewShotConfig, as_uint8_labels, load_shots, train_head
    from partseg.gan.sampling import noise_for_samples, sample

    labels = Labels(["background", "a", "b"], [(0, 0, 0), (255, 0, 0), (0, 255, 0)])
    s = sample(G, 2, seed=3, noise_mode="random")
    res = G.resolution
    masks = np.zeros((2, res, res), dtype=np.uint8)
    masks[:, : res // 2] = 1
    masks[:, res // 2:, : res // 2] = 2
    shots = write_sample_set(tmp_path / "shots", s, labels, masks)
    head = train_head(G, load_shots(shots), FewShotConfig(head="mlp", steps=3), progress=False)
    head_path = head.save(tmp_path / "head.safetensors")
    noise = noise_for_samples(G, [4], "random")
    with torch.no_grad():
        want = as_uint8_labels(head.predict_ws(G, s.ws[1:2], noise=noise, noise_mode="random")[1])[0]
    return labels, s, head_path, want


def test_suggest_returns_the_heads_prediction(tmp_path: Path, tiny_G: Any) -> None:
    labels, s, head_path, want = _head_and_samples(tmp_path, tiny_G)
    res = tiny_G.resolution
    kit = write_sample_set(tmp_path / "kit", s, labels)  # the same samples, not annotated yet
    write_image(kit / "images" / "real_photo.png", np.zeros((res, res, 3), np.uint8))  # no latent: no suggestion

    srv, url = start_labeller(kit, head=head_path, gan=tiny_G)
    try:
        info = json.loads(request(url + "api/kit")[1])
        assert info["suggest"]["available"] is True
        assert {i["name"]: i["suggest"] for i in info["images"]} == {"real_photo": False, "seed000003": True,
                                                                     "seed000004": True}
        status, body, headers = request(url + "api/suggest/seed000004", "POST", b"")
        assert status == 200 and headers["Content-Type"] == "application/octet-stream"
        assert np.array_equal(np.frombuffer(body, np.uint8).reshape(res, res), want)
        assert request(url + "api/suggest/real_photo", "POST", b"")[0] == 409
        assert not (kit / "masks").exists()  # a suggestion is only a proposal: nothing is written
    finally:
        srv.stop()
    Labels(["x", "y"], [(0, 0, 0), (1, 1, 1)]).save(kit)
    with pytest.raises(ValueError, match="classes"):
        start_labeller(kit, head=head_path, gan=tiny_G)


def test_stale_saves_are_refused(server: str, kit: Path) -> None:
    """Saves numbered by the page: one that arrives after a newer one of the same page is not written."""
    a = np.full((SIZE, SIZE), 1, np.uint8)
    b = np.full((SIZE, SIZE), 2, np.uint8)

    def put(mask: np.ndarray, rev: str, session: str = "tab1") -> int:
        return request(server + "api/mask/face_0", "PUT", mask.tobytes(), "application/octet-stream",
                       {"X-Labeller-Session": session, "X-Mask-Revision": rev})[0]

    assert put(b, "2") == 200
    assert put(a, "1") == 409  # older than what is on disk
    assert put(a, "2") == 409
    assert np.array_equal(read_mask(kit / "masks" / "face_0.png"), b)
    assert put(a, "1", session="tab2") == 200  # another tab (or a reload) numbers its own saves
    assert put(b, "x") == 400


# ------------------------------------------------------------------------------------------ in the browser


def _chrome(tmp_path: Path) -> Any:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"headless browser test needs Debian's chromium and chromium-driver; missing {missing} "
                    f"(apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("headless browser test needs selenium (pip install -e '.[dev]')")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--disable-default-apps", "--no-first-run", "--no-default-browser-check",
                "--disable-quic", "--metrics-recording-only", "--window-size=1280,900",
                "--force-device-scale-factor=1", f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Page:
    """The labeller page in a browser, driven as a user would: pointer actions at image coordinates, keys."""

    def __init__(self, driver: Any, kit: Path, labels: Labels):
        self.driver, self.kit, self.labels = driver, kit, labels

    def state(self) -> dict[str, Any]:
        return self.driver.execute_script("return window.labeller.state()")

    def wait_ready(self, name: str | None = None) -> None:
        wait_for(f"the page to show {name or 'an image'}",
                 lambda: (s := self.state())["ready"] and (name is None or s["name"] == name))

    def client(self, x: float, y: float) -> tuple[int, int]:
        """Viewport coordinates of image point (x, y) (pixel (i, j) spans [i, i+1) x [j, j+1))."""
        p = self.driver.execute_script("return window.labeller.imageToClient(arguments[0], arguments[1])", x, y)
        return round(p["x"]), round(p["y"])

    def drag(self, points: list[tuple[float, float]]) -> None:
        from selenium.webdriver.common.actions.action_builder import ActionBuilder

        ab = ActionBuilder(self.driver)
        ab.pointer_action.move_to_location(*self.client(*points[0])).pointer_down()
        for p in points[1:]:
            ab.pointer_action.move_to_location(*self.client(*p))
        ab.pointer_action.pointer_up()
        ab.perform()

    def click(self, x: float, y: float) -> None:
        from selenium.webdriver.common.actions.action_builder import ActionBuilder

        ab = ActionBuilder(self.driver)
        ab.pointer_action.move_to_location(*self.client(x, y)).click()
        ab.perform()

    def hover(self, x: float, y: float) -> None:
        from selenium.webdriver.common.actions.action_builder import ActionBuilder

        ab = ActionBuilder(self.driver)
        ab.pointer_action.move_to_location(*self.client(x, y))
        ab.perform()

    def keys(self, *k: str, ctrl: bool = False) -> None:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        chain = ActionChains(self.driver)
        if ctrl:
            chain.key_down(Keys.CONTROL).send_keys(*k).key_up(Keys.CONTROL).perform()
        else:
            chain.send_keys(*k).perform()

    def element(self, testid: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, f"[data-testid={testid}]")

    def on_disk(self, name: str, expected: np.ndarray, what: str, wait_idle: bool = True) -> None:
        """Wait for the autosave to land, then compare the whole mask file with `expected`."""
        path, image = self.kit / "masks" / f"{name}.png", self.kit / "images" / f"{name}.png"

        def matches() -> bool:
            if (wait_idle and not self.state()["idle"]) or not path.exists():
                return False
            return np.array_equal(read_mask(path, self.labels, image), expected)

        try:
            wait_for(what, matches, timeout=10)
        except AssertionError:
            got = read_mask(path, self.labels) if path.exists() else None
            diff = None if got is None else np.argwhere(got != expected)[:10].tolist()
            raise AssertionError(f"{what}: the mask on disk differs at (y, x) {diff}") from None


def test_annotate_in_headless_chromium(kit: Path, server: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.keys import Keys

    driver = _chrome(tmp_path)
    page = Page(driver, kit, FACES)
    state, client, keys = page.state, page.client, page.keys
    name = NAMES[0]
    try:
        driver.get(server)
        page.wait_ready(name)
        assert (state()["width"], state()["height"]) == (SIZE, SIZE)
        assert page.element("progress").text == "0 of 3 annotated"
        assert len(driver.find_elements("css selector", "[data-testid^=class-]")) == len(FACES)
        assert page.element("suggest").get_attribute("disabled")  # no head given

        # class 2 by its number key, a stroke with the 3 px brush along row 40 from x=8 to x=40
        keys("2")
        assert state()["cls"] == 2 and state()["tool"] == "brush" and state()["brush"] == 3
        page.drag([(8.5, 40.5), (20.5, 40.5), (40.5, 40.5)])
        stroke = np.full((SIZE, SIZE), IGNORE, dtype=np.uint8)
        stroke[39:42, 7:42] = 2  # 3x3 stamps centred on pixels (8..40, 40)
        page.on_disk(name, stroke, "the stroke to be saved")

        # class 3 from the palette, a polygon traced on pixel borders: it covers exactly pixels x 16-31, y 8-23
        page.element("class-3").click()
        page.element("tool-polygon").click()
        assert state()["cls"] == 3 and state()["tool"] == "polygon"
        for x, y in ((16, 8), (32, 8), (32, 24), (16, 24)):
            page.click(x, y)
        assert state()["polygon"] == 4
        keys(Keys.ENTER)
        both = stroke.copy()
        both[8:24, 16:32] = 3
        page.on_disk(name, both, "the polygon to be saved")
        assert page.element("progress").text == "1 of 3 annotated"
        assert page.element("save-status").text == "saved"
        driver.save_screenshot(str(tmp_path / "labeller.png"))

        # undo takes the polygon back, the undo button the stroke; redo brings the stroke back
        keys("z", ctrl=True)
        page.on_disk(name, stroke, "undo of the polygon")
        page.element("undo").click()
        page.on_disk(name, np.full((SIZE, SIZE), IGNORE, np.uint8), "undo of the stroke")
        keys("y", ctrl=True)
        page.on_disk(name, stroke, "redo of the stroke")

        # a polygon closed by double-clicking its last point
        for x, y in ((50, 50), (60, 50)):
            page.click(x, y)
        ab = ActionBuilder(driver)
        ab.pointer_action.move_to_location(*client(55, 60)).click().click()
        ab.perform()
        tri = stroke.copy()
        tri[np.asarray(rasterize_polygon([(50, 50), (60, 50), (55, 60)], SIZE, SIZE))] = 3
        page.on_disk(name, tri, "the double-clicked polygon")
        keys("z", ctrl=True)
        page.on_disk(name, stroke, "undo of the double-clicked polygon")

        # fill: class 5 into the unlabelled region around the stroke, then the eraser over the stroke's start
        keys("5", "g")
        page.click(2.5, 2.5)
        filled = np.where(stroke == 2, 2, 5).astype(np.uint8)
        page.on_disk(name, filled, "the fill")
        keys("e")
        assert state()["tool"] == "eraser"
        page.drag([(8.5, 40.5), (10.5, 40.5)])
        erased = filled.copy()
        erased[39:42, 7:12] = IGNORE
        page.on_disk(name, erased, "the eraser stroke")

        # zoom at the pointer with the wheel, pan with space-drag, then fit again
        scale0 = state()["scale"]
        driver.execute_script("""
            const v = document.getElementById('view'), r = v.getBoundingClientRect();
            v.dispatchEvent(new WheelEvent('wheel', {deltaY: -300, clientX: r.left + r.width / 2,
                                                     clientY: r.top + r.height / 2, bubbles: true, cancelable: true}));
        """)
        wait_for("the wheel to zoom in", lambda: state()["scale"] > scale0 * 1.3)
        tx0 = state()["tx"]
        ActionChains(driver).key_down(" ").perform()
        ab = ActionBuilder(driver)
        ab.pointer_action.move_to_location(600, 400).pointer_down().move_to_location(700, 420).pointer_up()
        ab.perform()
        ActionChains(driver).key_up(" ").perform()
        assert abs(state()["tx"] - (tx0 + 100)) < 1.5
        keys("f")
        assert state()["scale"] == scale0
        page.on_disk(name, erased, "nothing changed by zoom and pan")

        # reload: the page shows the saved mask, in its state and on the canvas
        driver.refresh()
        page.wait_ready(name)  # the URL remembers the image
        assert driver.execute_script("return window.labeller.mask()") == erased.ravel().tolist()
        driver.execute_script("window.labeller.setOpacity(100)")
        image = read_image(kit / "images" / f"{name}.png")
        for (x, y), want in (((30, 40), FACES.colors[2]), ((2, 2), FACES.colors[5]), ((8, 40), image[40, 8])):
            got = driver.execute_script("return window.labeller.viewPixel(arguments[0], arguments[1])",
                                        *client(x + 0.5, y + 0.5))
            assert got[:3] == list(want), (x, y, got)

        # next image; it has no mask yet. A stroke there, then the tab goes away before the autosave delay
        # is over: the page hands the mask to a keepalive request and nothing is lost
        page.element("next").click()
        page.wait_ready(NAMES[1])
        assert set(driver.execute_script("return window.labeller.mask()")) == {IGNORE}
        keys("1", "b")
        driver.execute_script("window.labeller.holdSaves(true)")
        page.drag([(30.5, 30.5), (34.5, 30.5)])
        assert state()["pending"] == 1 and not (kit / "masks" / f"{NAMES[1]}.png").exists()
        urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        driver.get("about:blank")
        late = np.full((SIZE, SIZE), IGNORE, dtype=np.uint8)
        late[29:32, 29:36] = 1
        page.on_disk(NAMES[1], late, "the save handed over when the tab closed", wait_idle=False)

        # the page asked only this server for anything, and logged no errors of its own
        assert urls and all(u.startswith(server) for u in urls), urls
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
                  and not ("/api/mask/" in e["message"] and "404" in e["message"])]  # "no mask yet" is a 404
        assert not errors, errors

        docs = os.environ.get("PARTSEG_LABELLER_SCREENSHOT")
        if docs:  # the README's picture: a face labelled but for its hair, which is being traced with the polygon
            truth = render_face(2, SIZE)[1]
            hair = truth == FACES.index("hair")
            assert request(server + f"api/mask/{NAMES[2]}", "PUT", np.where(hair, IGNORE, truth).astype(np.uint8)
                           .tobytes(), "application/octet-stream")[0] == 200
            driver.get(server + f"#{NAMES[2]}")
            page.wait_ready(NAMES[2])
            keys("2", "p")
            rows = np.flatnonzero(hair.any(1))
            for y in np.linspace(rows[0], rows[0] + 0.6 * (rows[-1] - rows[0]), 6).round().astype(int):
                page.click(float(np.flatnonzero(hair[y])[0]), y + 0.5)
            page.hover(SIZE / 2, rows[0] + 0.5)  # the rubber band follows the pointer
            driver.save_screenshot(docs)
    finally:
        driver.quit()


def test_suggest_button_prefills_the_unlabelled_pixels(tmp_path: Path, tiny_G: Any) -> None:
    """With a head, "suggest" fills what is not labelled yet with its prediction, keeps what is, and saves."""
    driver = _chrome(tmp_path)  # first: skips before any work when there is no browser
    srv = None
    name = "seed000004"
    try:
        labels, s, head_path, want = _head_and_samples(tmp_path, tiny_G)
        kit = write_sample_set(tmp_path / "kit", s, labels)
        srv, url = start_labeller(kit, head=head_path, gan=tiny_G)
        page = Page(driver, kit, labels)
        driver.get(url + f"#{name}")
        page.wait_ready(name)
        page.keys("2")
        page.drag([(3.5, 3.5), (6.5, 3.5)])  # labelled by hand before the suggestion
        mine = np.full_like(want, IGNORE)
        mine[2:5, 2:8] = 2
        page.on_disk(name, mine, "the hand-painted stroke")
        button = page.element("suggest")
        assert not button.get_attribute("disabled")
        button.click()
        page.on_disk(name, np.where(mine == IGNORE, want, mine), "the suggestion around the stroke")
        page.keys("z", ctrl=True)
        page.on_disk(name, mine, "undo of the suggestion")
    finally:
        driver.quit()
        if srv is not None:
            srv.stop()
