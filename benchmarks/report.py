"""What every benchmark script shares: a description of the machine and rewriting its own BENCHMARKS.md section."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "BENCHMARKS.md"
HEADER = ("# Benchmarks\n\nMeasured results, one section per benchmark script. Each section names the machine, the "
          "exact command and the date (UTC); its script rewrites only its own section.\n")


def machine() -> str:
    """OS, architecture, CPU model, core count, Python and torch versions."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        n = torch.get_num_threads()
        tv = f", torch {torch.__version__}, {n} thread{'s' if n > 1 else ''}"
    except ImportError:
        tv = ""
    return (f"{platform.system()} {platform.machine()}, {model}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}{tv}")


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")


def write_section(name: str, text: str) -> None:
    """Replace the text between `<!-- name:start -->` and `<!-- name:end -->` (appending it if absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = f"{start}\n{text.strip()}\n{end}"
    old = RESULTS.read_text() if RESULTS.exists() else HEADER
    if start in old and end in old:
        new = old[:old.index(start)] + text + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    RESULTS.write_text(new)
