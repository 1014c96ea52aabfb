"""Segmentation-UNet training step on CPU: float32 against bf16 autocast, side by side in one run (issue #14).

    python3 benchmarks/seg_train_speed.py [--size 128 --repeats 4]

One AdamW step (forward, cross-entropy, backward, update) of partseg's UNet at two widths ([24, 48, 96, 192],
the label oracle's; [16, 32, 64, 128], the auto-shot default) and batch sizes 16 and 32, each timed `repeats`
times after a warm-up, best time kept; float32 and bf16 autocast alternate so both see the same machine state.
`SegTrainConfig.amp` (on by default) picks bf16 on CUDA and on CPUs with bf16 units (`partseg.precision`).
Writes the section "seg-train-speed" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from report import machine, utc_now, write_section  # noqa: E402

from partseg.distill.unet import UNet, UNetConfig  # noqa: E402
from partseg.precision import cpu_has_bf16  # noqa: E402


def step_seconds(channels: list[int], batch: int, size: int, bf16: bool, repeats: int) -> float:
    torch.manual_seed(0)
    model = UNet(UNetConfig(num_classes=10, channels=channels))
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch, size, size))
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    rows = []
    for channels in ([24, 48, 96, 192], [16, 32, 64, 128]):
        for batch in (32, 16):
            fp32 = step_seconds(channels, batch, args.size, False, args.repeats)
            bf16 = step_seconds(channels, batch, args.size, True, args.repeats)
            rows.append(f"| {channels} | {batch} | {fp32:.2f} | {bf16:.2f} | {fp32 / bf16:.1f}x | "
                        f"{1000 * fp32 / batch:.0f} | {1000 * bf16 / batch:.0f} |")
            print(rows[-1], flush=True)
    cmd = "python3 benchmarks/seg_train_speed.py" + (f" --size {args.size}" if args.size != 128 else "")
    text = "\n".join([
        "## Segmentation UNet training step: float32 vs bf16 autocast (issue #14)",
        "",
        f"One AdamW step of the UNet on {args.size} px inputs, best of {args.repeats} after a warm-up. The CPU "
        f"{'has' if cpu_has_bf16() else 'lacks'} bf16 units (avx512_bf16 / amx_bf16), so `SegTrainConfig.amp` "
        f"{'uses bf16 here' if cpu_has_bf16() else 'keeps float32 here'}.",
        "",
        f"- Machine: {machine()}",
        f"- Command: `{cmd}`",
        f"- Date (UTC): {utc_now()}",
        "",
        "| channels | batch | float32 s/step | bf16 s/step | speed-up | float32 ms/image | bf16 ms/image |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
    ])
    if not args.no_write:
        write_section("seg-train-speed", text)


if __name__ == "__main__":
    main()
