"""Where the HTTP service's CPU goes per request (issue #19 part 2): front service vs model service vs client.

    python3 benchmarks/serve_profile.py [--seconds 8] [--concurrency 32] [--batch 16] [--no-write]

Serves the label-oracle UNet as ONNX exactly as benchmarks/serve_load.py does (batching on, max batch size
--batch), then loads /predict with --concurrency closed-loop clients twice:

1. without a profiler: requests/s and the CPU seconds each process spent (user + system, from /proc, children
   threads included) per answered request: the front service, the model service and this client;
2. with py-spy (`pip install py-spy`) sampling both service processes (`--nonblocking`, idle threads left out, so
   a sample is a thread on a CPU): each sample is put in the first category its stack meets, from the innermost
   frame out (the network, upload decoding, pre/post-processing, PNG encoding, serialisation between the
   services, form parsing, the HTTP servers and clients, BentoML's own dispatch, logging, metrics, ...).

Writes the `serve_profile` section of BENCHMARKS.md unless --no-write; --label names the code measured (e.g. a
commit) in the printed summary and the section.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import machine, utc_now, write_section  # noqa: E402
from serve_load import WEIGHTS, faces, start, stop  # noqa: E402

IDLE_NAME = "(waiting: epoll, idle pool threads)"
# (category, substrings of a py-spy frame "function (file:line)"); the innermost frame that matches decides.
CATEGORIES = (
    ("network (onnxruntime)", ("onnxruntime/",)),
    ("upload decoding (Pillow)", ("decode_image (",)),
    ("PNG encoding of the answer", ("mask_png (", "rgb_png (")),
    ("pre/post-processing (resize, argmax)", ("partseg/runtime.py",)),
    ("serialisation between the services", ("_bentoml_impl/serde.py", "pickle")),
    ("form parsing and re-encoding (guard)", ("partseg/serve/forms.py", "python_multipart/")),
    ("guard (admission, body, errors)", ("partseg/serve/guard.py",)),
    ("logging", ("logging/",)),
    ("metrics, tracing", ("prometheus_client/", "opentelemetry/")),
    ("pydantic validation", ("pydantic",)),
    ("HTTP server (uvicorn, h11, starlette)", ("uvicorn/", "h11/", "httptools", "starlette/")),
    ("HTTP client between the services", ("aiohttp/", "httpx/", "httpcore/", "yarl/", "multidict/")),
    ("BentoML dispatch", ("bentoml/", "_bentoml_impl/")),
    ("temporary upload files", ("tempfile.py", "shutil.py", "anyio/")),
    ("asyncio loop, sockets, threads", ("asyncio/", "selectors.py", "threading.py", "concurrent/", "socket.py",
                                        "uvloop")),
)


IDLE = ("EpollSelector.select (selectors.py", "_worker (concurrent/futures/thread.py:81)", "Loop.run_forever (uvloop")


def categorise(stack: str) -> str:
    frames = stack.split(";")
    if any(frames[-1].startswith(k) for k in IDLE):  # py-spy counts some waits (epoll, an idle pool thread) as
        return IDLE_NAME                             # running; they are left out of the shares
    for frame in reversed(frames):  # innermost first
        for name, keys in CATEGORIES:
            if any(k in frame for k in keys):
                return name
    return "other"


def service_pids(server: int) -> dict[str, int]:
    """The two BentoML worker processes descending from the server process (by their --service-name)."""
    parent: dict[int, int] = {}
    argvs: dict[int, list[bytes]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                argvs[int(d.name)] = (d / "cmdline").read_bytes().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
    out: dict[str, int] = {}
    for pid, argv in argvs.items():
        up = pid
        while up > 1 and up != server:
            up = parent.get(up, 0)
        if up == server and b"--service-name" in argv:
            name = argv[argv.index(b"--service-name") + 1].decode()
            out["model" if name == "partseg-model" else "front"] = pid
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, all threads


async def load(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> tuple[int, int, float]:
    """(answered 200, other answers, wall s)."""
    import httpx

    ok = bad = 0
    t_end = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker(k: int) -> None:
            nonlocal ok, bad
            i = k
            while time.monotonic() < t_end:
                body = bodies[i % len(bodies)]
                i += concurrency
                r = await client.post("/predict", files={"image": ("face.png", body, "image/png")})
                ok, bad = (ok + 1, bad) if r.status_code == 200 else (ok, bad + 1)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return ok, bad, time.perf_counter() - t0


def measure_cpu(url: str, pids: dict[str, int], bodies: list[bytes], args: argparse.Namespace) -> dict:
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    client0 = time.process_time()
    ok, bad, wall = asyncio.run(load(url, bodies, args.concurrency, args.seconds))
    per = {k: (cpu_seconds(p) - before[k]) / max(ok, 1) * 1000 for k, p in pids.items()}
    per["client"] = (time.process_time() - client0) / max(ok, 1) * 1000
    return {"ok": ok, "bad": bad, "rps": ok / wall, "cpu_ms": per}


def sample(url: str, pids: dict[str, int], bodies: list[bytes], args: argparse.Namespace, tmp: Path
           ) -> dict[str, Counter]:
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: pip install py-spy (or run with --no-spy)")
    procs = {}
    for k, pid in pids.items():
        out = tmp / f"{k}.txt"
        procs[k] = (subprocess.Popen([spy, "record", "--pid", str(pid), "--format", "raw", "--nonblocking",
                                      "--rate", str(args.rate), "--duration", str(int(args.seconds) + 1),
                                      "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
                    out)
    time.sleep(0.5)
    asyncio.run(load(url, bodies, args.concurrency, args.seconds))
    result: dict[str, Counter] = {}
    for k, (p, out) in procs.items():
        _, err = p.communicate(timeout=60)
        if not out.exists():
            raise SystemExit(f"py-spy on the {k} service wrote nothing: {err.decode()[-500:]}")
        c: Counter = Counter()
        for line in out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if stack and n.isdigit():
                c[categorise(stack)] += int(n)
        result[k] = c
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(out, args.keep / out.name)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="per phase")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16, help="max batch size of the model service")
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--label", default="", help="what code this is (shown with the figures)")
    ap.add_argument("--no-spy", action="store_true", help="CPU per request only")
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch BENCHMARKS.md")
    ap.add_argument("--keep", type=Path, help="copy py-spy's raw stacks (front.txt, model.txt) into this folder")
    args = ap.parse_args()

    from partseg.runtime.onnx_export import export_onnx

    bodies = faces(32)
    with tempfile.TemporaryDirectory(prefix="partseg-serve-profile-") as tmp:
        tmp_path = Path(tmp)
        onnx = tmp_path / "oracle.onnx"
        export_onnx(WEIGHTS, onnx)
        env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
               "OMP_NUM_THREADS": "1", "PARTSEG_THREADS": "1", "PYTHONPATH": str(ROOT),
               "PARTSEG_MAX_BATCH_SIZE": str(args.batch)}
        subprocess.run([sys.executable, "-m", "partseg.cli", "serve", "package", str(onnx)], env=env, cwd=ROOT,
                       check=True, capture_output=True)
        proc, url = start(env, tmp_path / "server.log")
        try:
            pids = service_pids(proc.pid)
            if set(pids) != {"front", "model"}:
                raise SystemExit(f"could not find both service processes: {pids}")
            asyncio.run(load(url, bodies, 4, 3.0))  # warm-up; trains BentoML's batching optimiser
            cpu = measure_cpu(url, pids, bodies, args)
            spy = {} if args.no_spy else sample(url, pids, bodies, args, tmp_path)
        finally:
            stop(proc)
    text = report(cpu, spy, args)
    print(text)
    if not args.no_write:
        write_section("serve_profile", text)


def report(cpu: dict, spy: dict[str, Counter], args: argparse.Namespace) -> str:
    ms = cpu["cpu_ms"]
    lines = [f"{args.label + ': ' if args.label else ''}{cpu['rps']:.1f} req/s at concurrency {args.concurrency} "
             f"({cpu['ok']} answered, {cpu['bad']} other); CPU per request: front {ms['front']:.2f} ms, model "
             f"service {ms['model']:.2f} ms, client {ms['client']:.2f} ms", ""]
    for k in ("front", "model"):
        c = spy.get(k)
        if not c:
            continue
        idle = c.pop(IDLE_NAME, 0)
        total = sum(c.values())
        lines += [f"{k} service, {total} samples at {args.rate} Hz ({idle} more waiting in epoll or an idle pool "
                  f"thread, left out); share of its CPU, x CPU per request = ms:", "",
                  "| category | share | ms per request |", "| --- | ---: | ---: |"]
        for name, n in c.most_common():
            lines.append(f"| {name} | {100 * n / total:.1f} % | {ms[k] * n / total:.2f} |")
        lines.append("")
    lines.append(f"Machine: {machine()}; date (UTC) {utc_now()}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
