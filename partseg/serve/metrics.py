"""Prometheus helpers: the batch-size histogram's buckets and reading histograms back from /metrics text."""

from __future__ import annotations

BATCH_METRIC = "partseg_model_batch_images"
BENTOML_BATCH_METRIC = "bentoml_service_adaptive_batch_size"


def batch_buckets(max_batch_size: int) -> list[float]:
    b, out = 1, []
    while b < max_batch_size:
        out.append(float(b))
        b *= 2
    return [*out, float(max_batch_size)]


def histogram_counts(metrics_text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts {le: count} of a Prometheus histogram in /metrics text (summed over labels)."""
    out: dict[float, float] = {}
    prefix = name + "_bucket{"
    for line in metrics_text.splitlines():
        if not line.startswith(prefix):
            continue
        labels, _, value = line[len(prefix):].rpartition("} ")
        le = next((p.split("=", 1)[1].strip('"') for p in labels.split(",") if p.startswith("le=")), None)
        if le is None:
            continue
        key = float("inf") if le == "+Inf" else float(le)
        out[key] = out.get(key, 0.0) + float(value)
    return dict(sorted(out.items()))


def histogram_sizes(after: dict[float, float], before: dict[float, float] | None = None) -> dict[str, float]:
    """Observations per bucket (not cumulative) of `histogram_counts` output, or of the difference between two
    scrapes: {"1": 8, "2": 3, "3-4": 5, ">16": 0, ...}, empty buckets left out."""
    before = before or {}
    out, prev_le, prev = {}, 0.0, 0.0
    for le in sorted(after):
        c = after[le] - before.get(le, 0.0)
        if c - prev > 0:
            lo = int(prev_le) + 1
            if le == float("inf"):
                label = f">{int(prev_le)}"
            else:
                label = str(int(le)) if lo >= int(le) else f"{lo}-{int(le)}"
            out[label] = c - prev
        prev_le, prev = le, c
    return out
