"""The overload half of benchmarks/serve_load.py (issue #17): --sweep (concurrency 1 to 256 against the admission
bound) and --startup-only (load right after an odd-size start-up, the D5 condition). Run through serve_load.py."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import time
from pathlib import Path

import numpy as np
from report import machine, utc_now
from serve_load import faces, start, stop

SWEEP = (1, 4, 16, 64, 128, 256)
TIMEOUT_S = 30.0


def odd_sizes() -> list[bytes]:
    """The start-up of issue #17 D5: two tall images, a 2048 px square and a wide one."""
    from PIL import Image

    rng = np.random.default_rng(5)
    out = []
    for h, w in ((1024, 256), (900, 200), (2048, 2048), (240, 1600)):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


async def sweep_level(url: str, bodies: list[bytes], digests: list[str], concurrency: int, seconds: float) -> dict:
    """One closed-loop level: every answer classified, every accepted mask hashed against the runtime's."""
    import hashlib

    import httpx
    from PIL import Image

    lat: list[float] = []
    counts = {"refused": 0, "other": 0, "timeout": 0, "mismatch": 0, "no_retry_after": 0}
    reasons: dict[str, int] = {}
    t_end = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S, limits=limits) as client:

        async def worker(k: int) -> None:
            i = k
            while time.monotonic() < t_end:
                j = i % len(bodies)
                i += concurrency
                t0 = time.perf_counter()
                try:
                    r = await client.post("/predict", files={"image": ("face.png", bodies[j], "image/png")})
                except httpx.TimeoutException:
                    counts["timeout"] += 1
                    continue
                except httpx.HTTPError:
                    counts["other"] += 1
                    continue
                if r.status_code != 200:
                    reasons[f"{r.status_code} {r.text[:150]}"] = reasons.get(f"{r.status_code} {r.text[:150]}", 0) + 1
                if r.status_code == 503:
                    counts["refused"] += 1
                    counts["no_retry_after"] += "retry-after" not in r.headers
                    await asyncio.sleep(0.05)  # a client that honours Retry-After waits; a short pause here
                    continue
                if r.status_code != 200:
                    counts["other"] += 1
                    continue
                lat.append(time.perf_counter() - t0)
                mask = np.asarray(Image.open(io.BytesIO(r.content)))
                counts["mismatch"] += hashlib.sha256(mask.tobytes()).hexdigest() != digests[j]

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        wall = time.perf_counter() - t0
    for why, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:5]:
        print(f"    {n} x {why}", flush=True)
    ms = np.asarray(lat) * 1000
    total = len(lat) + sum(counts[k] for k in ("refused", "other", "timeout"))
    return {"concurrency": concurrency, "accepted": len(lat), "total": total, "rps": len(lat) / wall,
            "p50": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
            "p99": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
            "max": float(ms.max()) if len(ms) else float("nan"),
            "refused_share": counts["refused"] / total if total else 0.0, **counts}


async def mixed_startup(url: str, odd: list[bytes], bodies: list[bytes]) -> list[int]:
    """The first requests a fresh server sees, 3 at a time, every other one an odd size: BentoML's batching
    optimiser fits its cost model on these (issue #17 D5)."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def one(k: int) -> list[int]:
            out = []
            for i in range(8):
                body = odd[(k + i) % len(odd)] if i % 2 == 0 else bodies[(k * 8 + i) % len(bodies)]
                r = await client.post("/predict", files={"image": ("x.png", body, "image/png")})
                if r.status_code != 200:
                    print(f"    start-up: {r.status_code} {r.text[:200]}", flush=True)
                out.append(r.status_code)
            return out

        return [c for codes in await asyncio.gather(*(one(k) for k in range(3))) for c in codes]


def run_sweep(env: dict[str, str], onnx: Path, tmp: Path, args: argparse.Namespace) -> tuple[list[dict], dict]:
    import hashlib

    from PIL import Image

    from partseg.runtime.segmenter import Segmenter

    bodies = faces(32)
    seg = Segmenter.load(onnx, providers=["CPUExecutionProvider"], threads=args.threads)
    masks = seg.predict([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in bodies])
    digests = [hashlib.sha256(m.tobytes()).hexdigest() for m in masks]
    load_before = os.getloadavg()[0]
    proc, url = start({**env, "PARTSEG_MAX_BATCH_SIZE": str(args.batch), "PARTSEG_MAX_QUEUE": str(args.queue)},
                      tmp / "server-sweep.log")
    try:
        startup = asyncio.run(mixed_startup(url, odd_sizes(), bodies))
        print(f"start-up requests (odd sizes among faces): {startup}", flush=True)
        rows = []
        for c in ((64,) if args.startup_only else SWEEP):
            rows.append(asyncio.run(sweep_level(url, bodies, digests, c, args.seconds)))
            r = rows[-1]
            print(f"  concurrency {c:3d}: {r['rps']:6.1f} accepted/s, p50 {r['p50']:7.1f} ms, p99 {r['p99']:7.1f} ms, "
                  f"refused {100 * r['refused_share']:5.1f} %, other {r['other']}, timeouts {r['timeout']}, "
                  f"mask mismatches {r['mismatch']}", flush=True)
    finally:
        stop(proc)
    return rows, {"startup": startup, "load": (load_before, os.getloadavg()[0])}


def startup_report(rows: list[dict], extra: dict, args: argparse.Namespace) -> str:
    (r,) = rows
    return "\n".join([
        "## Load right after an odd-size start-up (issue #17 D5)",
        "",
        "A fresh server's first 24 requests come 3 at a time, every other one an odd size (two tall images, a "
        "2048 px one, a wide one), then 64 closed-loop clients POST 64 px faces for "
        f"{args.seconds:g} s; no warm-up in between. BentoML's batching optimiser fits its cost per image on the "
        "first calls; when large images shared those calls (this UNet has no fixed input size, so a 2048 px image "
        "runs at 2048 px) it overestimated it and refused requests it could have served. Since issue #17 only inputs "
        "up to PARTSEG_BATCH_MAX_PIXELS are batched. Before (commit dfe24bb), the same start-up and load gave 19.8 % "
        "refused (this script copied into that checkout, run there with --no-write, same machine, 2026-12-03).",
        "",
        f"- Machine: {machine()}; 1-minute load average {extra['load'][0]:.1f} before and {extra['load'][1]:.1f} "
        f"after the run on {os.cpu_count()} cores (shared with a GAN training job)",
        "- Command: `python3 benchmarks/serve_load.py --startup-only" +
        (f" --seconds {args.seconds:g}`" if args.seconds != 10 else "`"),
        f"- Date (UTC): {utc_now()}",
        "",
        f"Start-up answers: {sorted(set(extra['startup']))}. At 64 clients: {r['accepted']} accepted "
        f"({r['rps']:.1f}/s, p50 {r['p50']:.0f} ms, p99 {r['p99']:.0f} ms), {100 * r['refused_share']:.1f} % "
        f"refused (503), {r['other']} other errors, {r['timeout']} timeouts, {r['mismatch']} masks differing from the "
        "runtime's.",
    ])


def sweep_report(rows: list[dict], extra: dict, args: argparse.Namespace) -> str:
    cmd = "python3 benchmarks/serve_load.py --sweep" + (f" --seconds {args.seconds:g}" if args.seconds != 8 else "")
    cmd += f" --queue {args.queue}" if args.queue != 128 else ""
    lines = [
        "## HTTP service under overload (issue #17)",
        "",
        "`partseg serve start` serving the label-oracle UNet as ONNX (onnxruntime-cpu, 1 intra-op thread, max batch "
        f"size {args.batch}) with its admission bound PARTSEG_MAX_QUEUE={args.queue} (requests in progress at once; "
        "the next is answered 503 with Retry-After without its body being read) and PARTSEG_MAX_LATENCY_MS=10000 "
        "(BentoML's queue refuses, 503, what it expects to wait longer). Before the sweep the server gets the odd "
        "sizes that used to make BentoML's batching refuse a third of the requests under load (issue #17 D5: two "
        f"tall images, a 2048 px one and a wide one; answers {extra['startup']}). Then, per level, N closed-loop "
        f"asyncio clients POST 64 px face PNGs to /predict for {args.seconds:g} s (a refused client pauses 50 ms); "
        f"client timeout {TIMEOUT_S:g} s. Every accepted mask is hashed (SHA-256) and compared with the in-process "
        "runtime's mask of the same image.",
        "",
        f"- Machine: {machine()}; **shared with a GAN training job and other jobs: 1-minute load average "
        f"{extra['load'][0]:.1f} before and {extra['load'][1]:.1f} after the run, on {os.cpu_count()} cores**; the "
        "client, both services and those jobs compete for the same cores, so absolute figures are low and noisy",
        f"- Command: `{cmd}`",
        f"- Date (UTC): {utc_now()}",
        "",
        "| concurrency | requests | accepted | accepted/s | p50 accepted (ms) | p99 accepted (ms) | max (ms) | refused "
        "(503) | other errors | timeouts | 503 without Retry-After | masks differing from the runtime |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['concurrency']} | {r['total']} | {r['accepted']} | {r['rps']:.1f} | {r['p50']:.0f} | "
                     f"{r['p99']:.0f} | {r['max']:.0f} | {100 * r['refused_share']:.1f} % | {r['other']} | "
                     f"{r['timeout']} | {r['no_retry_after']} | {r['mismatch']} |")
    under = [r for r in rows if r["concurrency"] <= args.queue]
    over = ", ".join(f"{100 * r['refused_share']:.0f} %" for r in rows if r["concurrency"] > args.queue)
    lines += ["", f"Up to the bound ({args.queue}), {sum(r['refused'] for r in under)} requests refused; above it, "
                  f"{over} "
                  f"refused, all with Retry-After: {sum(r['no_retry_after'] for r in rows) == 0}. Requests past the "
                  f"{TIMEOUT_S:g} s client timeout: {sum(r['timeout'] for r in rows)}; other errors: "
                  f"{sum(r['other'] for r in rows)}; accepted masks that differ from the runtime's: "
                  f"{sum(r['mismatch'] for r in rows)} of {sum(r['accepted'] for r in rows)}. Accepted latency above "
                  "the bound includes the time the refused clients' retries and the client's own work take from the "
                  "same cores; the queue itself is bounded by PARTSEG_MAX_QUEUE and PARTSEG_MAX_LATENCY_MS."]
    return "\n".join(lines)
