"""The public API under load: GET /bot/status/{user_id} and GET /transcript/{user_id}/{meeting_id}.

What is measured, per endpoint, through the gateway (which authenticates, then forwards to
bot-manager) on loopback:

- throughput and latency under closed-loop loads from wrk (`--latency`) of 2 and 8 connections:
  requests/s, p50, p75, p90, p99, non-2xx responses and socket errors, bytes/s;
- one cold request (a new connection, the first request to the endpoint since the meeting was
  seeded) and one warm request right after it on the same keep-alive connection, with `requests`;
- the size of the response body.

The transcript is that of a finished meeting with 10,000 segments, stored directly in PostgreSQL
with the rows a real run leaves (local/bench/seed.py).

Every request carries an API key, so it pays for authentication and the per-key rate limit (a Redis
INCR) like any client's. Bench keys carry their own rate_limit_per_minute (the most the admin API
allows; local/bench/stack.py), so the limit is exercised but never throttles: the default
API_RATE_LIMIT_PER_MINUTE (120) would answer 429 within the first second of load.

    python -m local.bench.api_load [--segments N] [--duration S] [--connections C [C ...]] [--threads T]

starts the bench stack (local/bench/stack.py), measures, prints JSON on stdout and stops it.
`seed_meeting` and `measure` need no such stack: any running one will do.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any
from urllib.parse import quote

import requests

from functions.common.settings import REPO_ROOT
from local.stack import Stack

from .report import table
from .seed import seed_meeting
from .stack import BenchStack, bench_stack

API_KEY_HEADER = "X-API-Key"  # functions/gateway/auth.py
# wrk's default of 2 s would count slow transcript responses as timeouts and leave them out of
# the latency distribution; a long timeout measures them instead.
WRK_TIMEOUT_S = 30


class BenchError(RuntimeError):
    """The bench cannot measure what it means to (wrong answer, missing tool)."""


# -- the load tool -------------------------------------------------------------------------------
def ensure_wrk() -> str:
    """The path of wrk, installed from Debian's package if missing (as root only)."""
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() != 0:
        raise BenchError("wrk is not installed: install Debian's `wrk` package (sudo apt-get install -y wrk), then rerun")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "wrk"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        # A fresh container has no package lists yet.
        subprocess.run(["apt-get", "update"], env=env, check=True, capture_output=True)
        subprocess.run(install, env=env, check=True, capture_output=True)
    path = shutil.which("wrk")
    if path is None:
        raise BenchError("apt-get installed wrk but it is not on PATH")
    return path


def wrk_version(wrk: str) -> str:
    # `wrk -v` prints its version, then its usage, and exits 1.
    output = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    return (output.stdout or output.stderr).splitlines()[0].split(" Copyright")[0]


_TIME_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_BINARY = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _ms(value: str, unit: str) -> float:
    return round(float(value) * _TIME_MS[unit], 3)


def _bytes(value: str, unit: str) -> int:
    return round(float(value) * _BINARY[unit])


def parse_wrk(output: str) -> dict[str, Any]:
    """wrk's `--latency` report as numbers: milliseconds, bytes, counts."""

    def find(pattern: str) -> re.Match | None:
        return re.search(pattern, output, re.MULTILINE)

    summary = find(r"^\s*(\d+) requests in ([\d.]+)(\w+), ([\d.]+)(\w+) read")
    rps = find(r"^Requests/sec:\s+([\d.]+)")
    transfer = find(r"^Transfer/sec:\s+([\d.]+)(\w+)")
    latency = find(r"^\s*Latency\s+([\d.]+)(\w+)\s+([\d.]+)(\w+)\s+([\d.]+)(\w+)")
    if not (summary and rps and transfer):
        raise BenchError(f"unexpected wrk output:\n{output}")
    percentiles = {f"p{p}_ms": _ms(v, u) for p, v, u in re.findall(r"^\s*(\d+)%\s+([\d.]+)(\w+)", output, re.MULTILINE)}
    errors_line = find(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")  # absent when none
    counts = errors_line.groups() if errors_line else (0, 0, 0, 0)
    socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, counts)))
    non_2xx = find(r"Non-2xx or 3xx responses: (\d+)")
    result: dict[str, Any] = {
        "requests": int(summary.group(1)),
        "duration_s": round(_ms(summary.group(2), summary.group(3)) / 1000, 2),
        "rps": float(rps.group(1)),
        # wrk records latency only for answered requests: no latency line when none was.
        "latency_avg_ms": _ms(latency.group(1), latency.group(2)) if latency else None,
        "latency_max_ms": _ms(latency.group(5), latency.group(6)) if latency else None,
        **percentiles,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": socket_errors,
        "read_bytes": _bytes(summary.group(4), summary.group(5)),
        "transfer_bytes_per_s": _bytes(transfer.group(1), transfer.group(2)),
    }
    result["errors"] = result["non_2xx"] + sum(socket_errors.values())
    return result


def _run_wrk(wrk: str, url: str, api_key: str, duration_s: int, connections: int, threads: int) -> dict[str, Any]:
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", f"--timeout={WRK_TIMEOUT_S}s",
               "--latency", "-H", f"{API_KEY_HEADER}: {api_key}", url]  # fmt: skip
    # The machine's load just before: the numbers mean little if other work was already using the CPUs.
    load_1m = os.getloadavg()[0]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + WRK_TIMEOUT_S + 30)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return {**parse_wrk(done.stdout), "load_avg_1m_before": round(load_1m, 2)}


# -- measuring -----------------------------------------------------------------------------------
def _drain(connections: int, warm_ms: float) -> None:
    """Wait out the requests wrk left in flight (one per connection at most), each about one warm
    request of CPU, so that what is measured next does not pay for them."""
    time.sleep(connections * warm_ms / 1000 / (os.cpu_count() or 1))


def _timed_get(http: requests.Session, url: str, api_key: str) -> tuple[requests.Response, float]:
    started = time.perf_counter()
    response = http.get(url, headers={API_KEY_HEADER: api_key}, timeout=120)
    return response, time.perf_counter() - started


def _single_requests(url: str, api_key: str) -> tuple[dict[str, Any], requests.Response]:
    """One cold and one warm request: the figures, and the warm response to check."""
    with requests.Session() as http:
        cold, cold_s = _timed_get(http, url, api_key)
        warm, warm_s = _timed_get(http, url, api_key)  # same keep-alive connection, so the same workers
    for response in (cold, warm):
        if response.status_code != 200:
            raise BenchError(f"GET {url} answered {response.status_code}: {response.text[:500]}")
    figures = {"cold_ms": round(cold_s * 1000, 1), "warm_ms": round(warm_s * 1000, 1), "response_bytes": len(warm.content)}
    return figures, warm


def _check_transcript(response: requests.Response, meeting_id: str, expected_segments: int) -> None:
    body = response.json()
    found = len(body.get("segments", []))
    if body["meeting"]["meeting_id"] != meeting_id or found != expected_segments:
        raise BenchError(f"GET /transcript returned {found} segments of meeting {body['meeting']['meeting_id']!r}, "
                         f"not {expected_segments} of {meeting_id!r}: was it seeded?")  # fmt: skip


def _check_status(response: requests.Response, meeting_id: str) -> None:
    if not any(bot["meeting_id"] == meeting_id for bot in response.json()["bots"]):
        raise BenchError(f"GET /bot/status does not list meeting {meeting_id!r}")


# Closed-loop loads: 2 connections leave the machine headroom (latency at a given throughput), 8
# saturate its 2 cores with wrk beside the services (throughput; p99 is then mostly queueing).
CONNECTIONS = (2, 8)


def measure(
    gateway_url: str,
    api_key: str,
    user_id: str,
    meeting_id: str,
    duration_s: int = 10,
    connections: tuple[int, ...] = CONNECTIONS,
    threads: int = 2,
    expected_segments: int = 10_000,
) -> dict[str, Any]:
    """Load GET /bot/status, then GET /transcript, through the gateway with wrk, once per count
    of `connections`.

    Fails (BenchError) unless both answer 200 and the transcript has `expected_segments` segments.
    """
    wrk = ensure_wrk()
    base = gateway_url.rstrip("/")
    user, meeting = quote(user_id, safe=""), quote(meeting_id, safe="")
    # The cheap endpoint is loaded first: wrk stops with up to `connections` requests in flight,
    # and the server still finishes them (it does not notice the client left), so a load of slow
    # transcripts would eat into the next run's CPU.
    urls = {"bot_status": f"{base}/bot/status/{user}", "transcript": f"{base}/transcript/{user}/{meeting}"}
    # Cold and warm first, for both, so no load has warmed anything up yet.
    singles = {}
    singles["transcript"], transcript = _single_requests(urls["transcript"], api_key)
    _check_transcript(transcript, meeting_id, expected_segments)
    singles["bot_status"], status = _single_requests(urls["bot_status"], api_key)
    _check_status(status, meeting_id)
    endpoints = {}
    for name, url in urls.items():
        loads = []
        for count in connections:
            loads.append({"connections": count, **_run_wrk(wrk, url, api_key, duration_s, count, min(threads, count))})
            _drain(count, singles[name]["warm_ms"])
        endpoints[name] = {"path": url.removeprefix(base), **singles[name], "loads": loads}
    return {
        "load": {"tool": wrk_version(wrk), "duration_s": duration_s, "connections": list(connections), "threads": threads,
                 "timeout_s": WRK_TIMEOUT_S, "cpus": os.cpu_count()},  # fmt: skip
        "segments": expected_segments,
        "endpoints": endpoints,
    }


# -- on a bench stack ---------------------------------------------------------------------------
def run(bs: BenchStack, segments: int = 10_000, duration_s: int = 10, connections: tuple[int, ...] = CONNECTIONS,
        threads: int = 2) -> dict[str, Any]:
    """Seed a meeting of `segments` segments on the bench stack, then load both endpoints."""
    user_id, meeting_id = "bench-api", "bench-api-meeting"
    api_key = bs.api_key(user_id)
    started = time.perf_counter()
    seed_meeting(bs.database_url, user_id, meeting_id, segments)
    seed_s = time.perf_counter() - started
    results = measure(bs.gateway, api_key, user_id, meeting_id, duration_s, connections, threads, segments)
    results["seed_s"] = round(seed_s, 2)
    results["gunicorn"] = gunicorn_layout(bs.stack)
    return results


def gunicorn_layout(stack: Stack) -> dict[str, dict[str, Any]]:
    """gunicorn's worker class, workers and threads of the gateway and bot-manager, as local/stack.py starts them."""
    layout = {}
    for program in stack.vexa_programs():
        if program.name in ("gateway", "bot-manager"):
            command = program.command
            layout[program.name] = {
                "worker_class": command[command.index("--worker-class") + 1],
                "workers": int(command[command.index("--workers") + 1]),
                "threads": int(command[command.index("--threads") + 1]),
            }
    return layout


def _layout(name: str, g: dict[str, Any]) -> str:
    if g.get("worker_class") == "gevent":
        return f"{name} {g['workers']} gevent workers"
    return f"{name} {g['workers']} workers × {g['threads']} threads"


def render(result: dict[str, Any]) -> str:
    load = result["load"]
    layout = ", ".join(_layout(name, g) for name, g in result["gunicorn"].items())
    counts = " and ".join(str(c) for c in load["connections"])
    intro = (
        f"{load['tool']}, {counts} connections (closed loop), up to {load['threads']} threads, {load['duration_s']} s per "
        f"endpoint and load, through the gateway with an API key, on loopback. gunicorn: {layout}. "
        f"The transcript is a finished meeting with {result['segments']:,} segments."
    )
    names = {"bot_status": "GET /bot/status/{user_id}", "transcript": "GET /transcript/{user_id}/{meeting_id}"}
    rows = [
        [names[name], l["connections"], round(l["rps"], 1), l["p50_ms"], l["p99_ms"], l["errors"], f"{e['response_bytes']:,}",
         e["warm_ms"]]
        for name, e in result["endpoints"].items()
        for l in e["loads"]
    ]  # fmt: skip
    columns = ["endpoint", "connections", "requests/s", "p50 ms", "p99 ms", "errors", "response bytes", "one request ms"]
    return intro + "\n\n" + table(columns, rows)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m local.bench.api_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=10_000, help="transcript segments of the meeting (default 10000)")
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per endpoint (default 10)")
    parser.add_argument("--connections", type=int, nargs="+", default=list(CONNECTIONS), help="wrk connections, one load each (default 2 8)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    args = parser.parse_args()
    ensure_wrk()  # before the stack's start-up
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON results only
        with bench_stack(REPO_ROOT / ".vexa" / "bench" / "stack") as bs:
            results = run(bs, args.segments, args.duration, tuple(args.connections), args.threads)
    print(json.dumps(results, indent=2))
    if any(load["errors"] for e in results["endpoints"].values() for load in e["loads"]):
        sys.exit("some requests failed: see non_2xx and socket_errors")


if __name__ == "__main__":
    main()
