"""GAN training speed on this machine: sec/kimg of one StyleGAN2 training step, settings side by side.

One training step as `partseg.gan.train` runs it (G main pass through D and back, D on fakes and reals, R1 on
reals amortised over its 16-step interval), timed for each setting in round-robin rounds so that load from
other processes hits all settings alike; the median round counts. Settings: precision (float32 against
`torch.autocast("cpu", bfloat16)`), memory format (channels_last), batch size, channel table.

    python3 benchmarks/gan_speed.py [--resolution 128 --rounds 5 --threads 2 --no-write]
    python3 benchmarks/gan_speed.py --device cuda     # on a lent GPU: batch, host syncs, torch.compile

Writes the section "gan-speed" ("gan-speed-quick" with --quick, "gan-speed-gpu" with --device cuda) of
BENCHMARKS.md. On a GPU the step is small enough to be bound by the host (kernel launches, and the `.item()` reads
of the losses that the training loop makes for its log, each a wait for the GPU): the GPU settings measure those.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from partseg.gan.discriminator import Discriminator
from partseg.gan.stylegan2 import Generator, GeneratorConfig
from partseg.precision import cpu_has_bf16

try:
    from report import machine, utc_now, write_section
except ImportError:  # run from the repository root
    from benchmarks.report import machine, utc_now, write_section

TABLES = {
    "T1 {4-16:128, 32:64, 64:32, 128:32}": {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 32},
    "T2 {4-16:128, 32:64, 64:32, 128:16}": {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16},
    "T3 {4-32:128, 64:64, 128:32}": {4: 128, 8: 128, 16: 128, 32: 128, 64: 64, 128: 32},
    "T4 {4-16:256, 32:128, 64:64, 128:32}": {4: 256, 8: 256, 16: 256, 32: 128, 64: 64, 128: 32},
}


class Step:
    """One training step's passes for a given setting, on random data (speed only)."""

    def __init__(self, table: dict[int, int], res: int, batch: int, bf16: bool, channels_last: bool,
                 compile: bool = False, device: str = "cpu", syncs: bool = False) -> None:
        cfg = GeneratorConfig(resolution=res, z_dim=256, w_dim=256, n_mlp=2, channels=table)
        self.G, self.D = Generator(cfg).to(device), Discriminator(res, cfg.channels, mbstd_group=4).to(device)
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.G, self.D = self.G.to(memory_format=self.fmt), self.D.to(memory_format=self.fmt)
        self.D_eager = self.D  # R1 needs a double backward, which compiled graphs do not support
        if compile:
            self.G, self.D = torch.compile(self.G), torch.compile(self.D)
        self.real = torch.randn(batch, 3, res, res, device=device).contiguous(memory_format=self.fmt)
        self.batch, self.bf16, self.device, self.syncs = batch, bf16, torch.device(device), syncs

    def __call__(self, r1: bool) -> None:
        ac = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)
        z = torch.randn(2, self.batch, 256, device=self.device)
        with ac:
            loss = F.softplus(-self.D(self.G(z[0])).float()).mean()
        loss.backward()
        reads = [loss]
        with torch.no_grad(), ac:
            fake = self.G(z[1])
        with ac:
            fake_logits, real_logits = self.D(fake).float(), self.D(self.real).float()
            loss = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
        loss.backward()
        reads += [loss, fake_logits.mean(), real_logits.mean()]
        if r1:  # the R1 penalty runs in float32, as in training
            real = self.real.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.D_eager(real).sum(), real, create_graph=True)
            g.square().sum().backward()
        if self.syncs:  # as the training loop reads its losses: one wait for the device per value
            for v in reads:
                v.item()


def _sync(step: Step) -> None:
    if step.device.type == "cuda":
        torch.cuda.synchronize(step.device)


def time_step(step: Step) -> float:
    """Seconds per step with R1 amortised: (15 plain steps + 1 step with R1) / 16."""
    _sync(step)
    t0 = time.perf_counter()
    step(r1=False)
    _sync(step)
    t1 = time.perf_counter()
    step(r1=True)
    _sync(step)
    t2 = time.perf_counter()
    r1_extra = max((t2 - t1) - (t1 - t0), 0.0)
    return (t1 - t0) + r1_extra / 16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--base", default="T2", choices=[k[:2] for k in TABLES], help="table of the main settings")
    ap.add_argument("--quick", action="store_true", help="tables T1 and T2 in fp32 and bf16 only")
    ap.add_argument("--focus", action="store_true",
                    help="the base table only: fp32, bf16, bf16 + channels_last, bf16 + torch.compile")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda: the GPU settings (base table, bf16, "
                    "channels_last; batch 32/64/128, the loop's loss reads or none, torch.compile)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()
    gpu = args.device != "cpu"
    torch.set_num_threads(args.threads)
    res = args.resolution
    base = next(k for k in TABLES if k.startswith(args.base))
    settings: dict[str, tuple] = {}
    if gpu:  # (table, batch, bf16, channels_last, compile, device, syncs)
        for name, v in {"batch 32, loss reads (as training runs)": (32, False, True),
                        "batch 32, no reads": (32, False, False), "batch 64, no reads": (64, False, False),
                        "batch 128, no reads": (128, False, False),
                        "batch 32, torch.compile, no reads": (32, True, False)}.items():
            settings[f"{args.base}, bf16, channels_last, {name}"] = (TABLES[base], v[0], True, True, v[1],
                                                                       args.device, v[2])
    elif args.focus:
        for name, v in {"fp32": (False, False, False), "bf16": (True, False, False),
                        "bf16, channels_last": (True, True, False), "bf16, torch.compile": (True, False, True),
                        "bf16, channels_last, torch.compile": (True, True, True)}.items():
            settings[f"{args.base}, batch 32, {name}"] = (TABLES[base], 32, *v)
    elif args.quick:
        for name in list(TABLES)[:2]:
            for bf16 in (False, True):
                settings[f"{name[:2]}, batch 32, {'bf16' if bf16 else 'fp32'}"] = (TABLES[name], 32, bf16, False)
    else:  # precision, memory format and batch on the base table; the other tables in bf16
        settings[f"{args.base}, batch 32, fp32"] = (TABLES[base], 32, False, False)
        settings[f"{args.base}, batch 32, bf16"] = (TABLES[base], 32, True, False)
        settings[f"{args.base}, batch 32, bf16, channels_last"] = (TABLES[base], 32, True, True)
        settings[f"{args.base}, batch 16, bf16"] = (TABLES[base], 16, True, False)
        for name, table in TABLES.items():
            if name != base:
                settings[f"{name[:2]}, batch 32, bf16"] = (table, 32, True, False)
    steps = {k: Step(v[0], res, *v[1:]) for k, v in settings.items()}
    times: dict[str, list[float]] = {k: [] for k in steps}
    for s in steps.values():  # warm-up (allocator, oneDNN kernel choice, compilation)
        s(r1=False)
        s(r1=True)
    for r in range(args.rounds):
        for k, s in steps.items():
            times[k].append(time_step(s))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    rows = []
    first = next(iter(times))
    base = statistics.median(times[first]) / settings[first][1]
    for k, ts in times.items():
        b = settings[k][1]
        sec_kimg = statistics.median(ts) / b * 1000
        rows.append(f"| {k} | {statistics.median(ts):.2f} | {min(ts):.2f}-{max(ts):.2f} | {sec_kimg:.0f} | "
                    f"{base * 1000 / sec_kimg:.2f}x |")
        print(rows[-1], flush=True)
    tables = "\n".join(f"- {k}" for k in TABLES)
    load = f"{os.getloadavg()[0]:.1f}"
    title = ", quick" if args.quick else ", precision / memory format / compile" if args.focus else ""
    where = (f"GPU: {torch.cuda.get_device_name(args.device)}" if gpu else
             f"bf16 units: {'yes' if cpu_has_bf16() else 'no'} (avx512_bf16 / amx_bf16 in /proc/cpuinfo)")
    text = (f"## GAN training speed on {'GPU' if gpu else 'CPU'}{title} (issue #14)\n\n"
            f"Machine: {machine()}; 1-minute load average {load} at the end (other jobs share it; the settings "
            f"ran in round-robin rounds; compare the spread of the rounds before trusting a ratio); "
            f"{where}. Command: `python3 benchmarks/gan_speed.py --resolution {res} "
            f"--rounds {args.rounds} --threads {args.threads}"
            f"{' --quick' if args.quick else f' --base {args.base}'}{' --focus' if args.focus else ''}"
            f"{f' --device {args.device}' if gpu else ''}`, "
            f"{utc_now()} UTC. StyleGAN2 at {res} px, z/w 256, "
            f"2 mapping layers; one training step = G main + D main + R1 amortised over 16 steps (no path-length "
            f"term); median of {args.rounds} round-robin rounds. Channel tables:\n{tables}\n\n"
            f"| setting | s/step (median) | s/step (rounds: min-max) | s/kimg | speed vs first row |\n"
            f"|---|---:|---:|---:|---:|\n" + "\n".join(rows))
    if not args.no_write:
        write_section("gan-speed-gpu" if gpu else "gan-speed-quick" if args.quick else
                      "gan-speed-focus" if args.focus else "gan-speed", text)


if __name__ == "__main__":
    main()
