"""The package's shape: stages import only from stages before them, and no module grows past ~400 lines.

Stage order (a module may import its own stage and any earlier one, never a later one):
  base (atomic, runs, weights_io, labels, images, distributed, http_errors, precision, eval.metrics) -> data -> gan
  -> features -> fewshot -> distill -> runtime -> {eval, serve, labeller} -> demo -> cli
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "partseg"
STAGES = [
    ("partseg.atomic", 0), ("partseg.runs", 0), ("partseg.weights_io", 0), ("partseg.labels", 0),
    ("partseg.images", 0), ("partseg.distributed", 0), ("partseg.http_errors", 0),
    ("partseg.precision", 0), ("partseg.eval.metrics", 0),
    ("partseg.data", 1), ("partseg.gan", 2), ("partseg.features", 3), ("partseg.fewshot", 4), ("partseg.distill", 5),
    ("partseg.runtime", 6), ("partseg.eval", 7), ("partseg.serve", 7), ("partseg.labeller", 7), ("partseg.demo", 8),
    ("partseg.cli", 9),
]
MAX_LINES = 400
# Modules still over the limit, each with the reason it is allowed; the list only ever shrinks.
OVERSIZE: dict[str, str] = {}
# Imports that still climb, as "module -> imported"; the list only ever shrinks.
KNOWN_CLIMBS: set[str] = set()


def _modules() -> dict[str, Path]:
    out = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _stage(module: str) -> int | None:
    best = max((p for p, _ in STAGES if module == p or module.startswith(p + ".")), key=len, default=None)
    return dict(STAGES)[best] if best else None


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported partseg module, line) for every import, relative ones resolved, lazy ones included."""
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("partseg"):
                found.append((name, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("partseg")]
    return found


def test_every_module_belongs_to_a_stage():
    assert [m for m in _modules() if m != "partseg" and _stage(m) is None] == []


def test_imports_never_climb_to_a_later_stage():
    climbs = []
    for module, path in _modules().items():
        mine = _stage(module)
        for name, line in _imports(module, path):
            theirs = _stage(name)
            if mine is not None and theirs is not None and theirs > mine and f"{module} -> {name}" not in KNOWN_CLIMBS:
                climbs.append(f"{path.relative_to(PACKAGE.parent)}:{line} {module} -> {name}")
    assert climbs == []


def test_no_module_over_the_size_limit():
    sizes = {m: len(p.read_text().splitlines()) for m, p in _modules().items()}
    over = {m: n for m, n in sizes.items() if n > MAX_LINES and m not in OVERSIZE}
    assert over == {}
    assert [m for m in OVERSIZE if sizes.get(m, 0) <= MAX_LINES] == []  # fixed ones leave the list


def test_the_layout_catches_a_climb(tmp_path):
    """The checker itself: a data module importing the runtime is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from partseg.runtime.segmenter import Segmenter\nfrom ..gan import x\n")
    names = [n for n, _ in _imports("partseg.data.bad", bad)]
    assert names == ["partseg.runtime.segmenter", "partseg.gan"]
    assert _stage("partseg.data.bad") == 1 and _stage(names[0]) == 6 and _stage(names[1]) == 2


def test_every_import_the_readme_documents_works():
    """The README's Python examples are the stable API: each import line in them must run."""
    import re

    text = (PACKAGE.parent / "README.md").read_text()
    lines = [line.split("#")[0].strip() for block in re.findall(r"```python\n(.*?)```", text, re.S)
             for line in block.splitlines() if re.match(r"\s*(from|import) partseg", line)]
    assert len(lines) >= 4
    for line in lines:
        exec(line, {})  # noqa: S102 - our own README's import lines
    for dotted in re.findall(r"`(partseg(?:\.[A-Za-z_]\w*)+)`", text):  # names mentioned in prose, e.g. partseg.x.Y
        module, attrs = dotted, []
        while True:
            try:
                obj = __import__(module, fromlist=["_"])
                break
            except ModuleNotFoundError:
                module, _, last = module.rpartition(".")
                attrs.insert(0, last)
        for a in attrs:
            obj = getattr(obj, a)  # AttributeError names what the README documents but the code lacks


def test_the_service_package_imports_without_torch():
    """partseg.serve's docstring promises numpy and Pillow only (torch loads inside the functions that need it)."""
    import subprocess
    import sys

    code = ("import sys, partseg.serve\n"
            "print(sorted(m for m in ('torch', 'onnxruntime', 'bentoml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
