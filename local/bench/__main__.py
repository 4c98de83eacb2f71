"""`make bench`: every benchmark in one run; results in .vexa/bench/results.json and docs/benchmarks.md.

    python -m local.bench [--skip-peer]
    python -m local.bench --render     # rewrite docs/benchmarks.md's tables from the last run's results

Order: the engines alone (no stack running), then the stack's parts (overhead,
latency, capacity, API load), then the stack stops and the peer runs on the
same, otherwise idle, machine.
"""
from __future__ import annotations

import argparse
import json
import time

from functions.common.settings import REPO_ROOT, get_settings

from . import api_load, cost, engines, peer, pipeline, report
from .sample import Sample
from .stack import bench_stack

WORKDIR = REPO_ROOT / ".vexa" / "bench"
RESULTS = WORKDIR / "results.json"
COMMAND = "make bench"


def step(name: str, results: dict, run) -> None:
    print(f"bench: {name} ...", flush=True)
    started = time.monotonic()
    results[name] = run()
    results.setdefault("took_s", {})[name] = round(time.monotonic() - started, 1)
    print(f"bench: {name} took {results['took_s'][name]} s", flush=True)
    RESULTS.write_text(json.dumps(results, indent=2))  # what is done is kept if a later part fails


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m local.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-peer", action="store_true", help="leave out WhisperLive (part 5)")
    parser.add_argument("--render", action="store_true", help="only rewrite the document from the last results")
    args = parser.parse_args()
    if args.render:
        render(json.loads(RESULTS.read_text()))
        return
    WORKDIR.mkdir(parents=True, exist_ok=True)
    settings = get_settings()
    sample, clip = Sample.load(), Sample.load(pipeline.CAPACITY_CLIP_SECONDS)
    started = time.monotonic()
    results: dict = {"machine": report.machine(), "command": COMMAND}

    step("engines", results, lambda: engines.measure(settings, sample))
    engine_alone = results["engines"]["as_service"]
    with bench_stack(WORKDIR / "stack") as bs:
        step("overhead", results, lambda: pipeline.overhead(bs, sample, engine_alone))
        step("latency", results, lambda: pipeline.latency(bs, sample))
        step("capacity", results, lambda: pipeline.capacity(bs, clip))
        step("api", results, lambda: api_load.run(bs))
    if not args.skip_peer:
        steps = [s["n"] for s in results["capacity"]["steps"]]
        cores = settings.whisper_instances * settings.whisper_cpu_threads  # what our transcription process uses
        step("peer", results, lambda: peer.measure(steps, clip, WORKDIR, cores, pipeline.stagger, pipeline.holds_peer))
    results["cost"] = cost.model(results["capacity"], settings)
    results["total_s"] = round(time.monotonic() - started, 1)
    RESULTS.write_text(json.dumps(results, indent=2))

    render(results)
    print(f"bench: done in {results['total_s']} s; {RESULTS.relative_to(REPO_ROOT)} and docs/benchmarks.md written")


def render(results: dict) -> None:
    sections = {
        "machine": report.render_machine(results),
        "engines": engines.render(results["engines"]),
        "overhead": pipeline.render_overhead(results["overhead"]),
        "latency": pipeline.render_latency(results["latency"]),
        "capacity": pipeline.render_capacity(results["capacity"]),
        "peer": peer.render(results["peer"], results["capacity"]) if "peer" in results else "Not run (--skip-peer).",
        "api": api_load.render(results["api"]),
        "cost": cost.render(results["cost"]),
    }
    stamp = f"\n\n<sub>{results['machine']['date']}, the machine above, `{COMMAND}`.</sub>"
    report.write({name: body + (stamp if name != "machine" else "") for name, body in sections.items()})


if __name__ == "__main__":
    main()
