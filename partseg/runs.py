"""Resumable run folders: what a trainer needs so that a re-run after Ctrl-C or kill -9 continues safely.

- `clean_stale_tmp`: an atomic write killed midway leaves its `.NAME.*.tmp` file behind (the real file is
  intact); a re-run removes them, so crashes do not accumulate half-written copies.
- `load_checkpoint`: `torch.load(weights_only=True)` with one-line errors that name the file, whatever is wrong
  with it (empty, truncated, text, a pickle that tries to run code: refused before anything runs).
- `settings_diff` / `refuse_other_settings`: continuing a run with other settings would silently train a model
  no command line describes, so it is refused with the list of differences.
- `read_log` / `write_log`: a resumed run drops the log records written after the checkpoint it resumes from.
- `StopOnSignal`: SIGINT/SIGTERM ask a training loop to finish its step and write a checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from partseg.atomic import atomic_write_text


def one_line(e: BaseException, limit: int = 240) -> str:
    """An exception's message on one line (torch's unpickling errors span paragraphs), cut to `limit` chars."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def torch_load_reason(path: Path, e: BaseException) -> str:
    """Why torch.load(weights_only=True) refused a file, in a few words (torch's own message is a page long)."""
    text = str(e)
    if text.startswith("Weights only load failed"):
        parts = [p.strip() for p in text.split("\n\n") if p.strip()]
        core = [p for p in parts[1:] if not p.startswith("Check the documentation")]
        detail = one_line(Exception(" ".join(core)), 160) if core else "unsupported content"
        return f"the weights-only unpickler refused it: {detail}"
    with open(path, "rb") as f:
        zipped = f.read(2) == b"PK"
    return f"{'damaged or truncated zip archive: ' if zipped else ''}{one_line(e, 160)}"


def clean_stale_tmp(folder: str | os.PathLike, names: Iterable[str] | None = None) -> list[Path]:
    """Remove leftovers of killed atomic writes (`.NAME.*.tmp`) in folder; with `names`, only those files'."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    patterns = [".*.tmp"] if names is None else [f".{n}.*.tmp" for n in names]
    gone = []
    for pattern in patterns:
        for tmp in folder.glob(pattern):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                gone.append(tmp)
    return gone


def load_checkpoint(path: str | os.PathLike, fmt: str, what: str = "training",
                    device: str | torch.device = "cpu") -> dict[str, Any]:
    """A training checkpoint written by `atomic_torch_save`, loaded without executing code; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file, not a {what} checkpoint; delete it to start the run over")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch's errors do not name the file and span many lines
        raise ValueError(f"{path}: not a readable {what} checkpoint ({torch_load_reason(path, e)}); delete it to "
                         f"start the run over") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path}: not a partseg {what} checkpoint (format {found!r}, expected {fmt!r})")
    return ckpt


def settings_diff(old: dict[str, Any], new: dict[str, Any], may_change: Iterable[str] = ()) -> list[str]:
    """'key: run has A, asked for B' for every setting that differs, except those that may change on resume."""
    free = set(may_change)
    return [f"{k}: run has {old.get(k)!r}, asked for {v!r}" for k, v in new.items()
            if k not in free and _norm(old.get(k)) != _norm(v)]


def refuse_other_settings(run: str | os.PathLike, old: dict[str, Any], new: dict[str, Any],
                          may_change: Iterable[str] = (), hint: str | None = None) -> None:
    """Raise a one-line ValueError listing the differences if `new` settings do not continue the run's `old`."""
    bad = settings_diff(old, new, may_change)
    if bad:
        hint = hint or f"use a new --out folder or the run's settings (see {Path(run) / SETTINGS_FILE})"
        raise ValueError(f"{run} holds a run with different settings ({'; '.join(bad)}); {hint}")


SETTINGS_FILE = "run_config.json"


def write_settings(run: str | os.PathLike, settings: dict[str, Any]) -> Path:
    path = Path(run) / SETTINGS_FILE
    atomic_write_text(json.dumps(settings, indent=1, default=str), path)
    return path


def _norm(v: Any) -> Any:
    """Compare settings as JSON would store them (tuples and lists alike)."""
    return json.loads(json.dumps(v, default=str))


def read_log(path: str | os.PathLike, upto_step: int) -> list[str]:
    """The JSON-lines records of a run's log with "step" <= upto_step (a record without one counts as step 0);
    lines torn by a kill are dropped."""
    path = Path(path)
    if not path.exists():
        return []
    keep = []
    for ln in path.read_text().splitlines():
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and int(rec.get("step", 0)) <= upto_step:
            keep.append(ln)
    return keep


def write_log(path: str | os.PathLike, lines: Iterable[str]) -> None:
    """Rewrite a run's log atomically (one record per line)."""
    atomic_write_text("".join(ln + "\n" for ln in lines), path)


class StopOnSignal:
    """SIGINT/SIGTERM set `requested` (the loop checkpoints and returns); a second SIGINT stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict = {}

    def __enter__(self) -> StopOnSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay as they are
                pass
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
