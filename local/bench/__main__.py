"""`make bench`: every benchmark in one run; results in .vexa/bench/results.json and docs/benchmarks.md.

    python -m local.bench [--skip-peer]
    python -m local.bench --only browser   # part 8 alone, merged into the last run's results
    python -m local.bench --only live      # part 9 alone (on a stack of its own), merged likewise
    python -m local.bench --only api       # part 6 alone (on a stack of its own), merged likewise
    python -m local.bench --only webhooks  # part 10 alone (on a stack of its own), merged likewise
    python -m local.bench --render         # rewrite docs/benchmarks.md's tables from the last run's results

Order: the engines alone (no stack running), then the stack's parts (overhead,
latency, capacity, API load), then the stack stops and the peer runs on the
same, otherwise idle, machine; last, browser bots in simulated meetings, on a
fresh stack whose bots reach the meeting simulators (part 8). Live delivery
(part 9, the WebSocket feed) runs on the stack after the API load, and then part 10 (live
transcripts while the meeting's user has webhook endpoints, half never answering).
"""
from __future__ import annotations

import argparse
import json
import time

from functions.common.settings import REPO_ROOT, Settings, get_settings

from . import api_load, browser, cost, engines, live, peer, pipeline, report, webhooks
from .sample import Sample
from .stack import bench_stack

WORKDIR = REPO_ROOT / ".vexa" / "bench"
RESULTS = WORKDIR / "results.json"
COMMAND = "make bench"
ONLY_COMMAND = "python -m local.bench --only {part}"


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
    parser.add_argument("--only", choices=sorted(ONLY), help="run one part alone and merge it into the last results")
    parser.add_argument("--render", action="store_true", help="only rewrite the document from the last results")
    args = parser.parse_args()
    if args.render:
        render(json.loads(RESULTS.read_text()))
        return
    WORKDIR.mkdir(parents=True, exist_ok=True)
    settings = get_settings()
    if args.only:
        run_only(args.only, settings)
        return
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
        step("live", results, lambda: live.run(bs, live.LiveConfig.from_env()))
        step("webhooks", results, lambda: webhooks.run(bs))
    if not args.skip_peer:
        steps = [s["n"] for s in results["capacity"]["steps"]]
        cores = settings.whisper_instances * settings.whisper_cpu_threads  # what our transcription process uses
        step("peer", results, lambda: peer.measure(steps, clip, WORKDIR, cores, pipeline.stagger, pipeline.holds_peer))
    step("browser", results, lambda: run_browser(settings, COMMAND))
    results["cost"] = cost.model(results["capacity"], settings, results["browser"])
    results["total_s"] = round(time.monotonic() - started, 1)
    RESULTS.write_text(json.dumps(results, indent=2))

    render(results)
    print(f"bench: done in {results['total_s']} s; {RESULTS.relative_to(REPO_ROOT)} and docs/benchmarks.md written")


def run_browser(settings: Settings, command: str) -> dict:
    """Part 8, with the machine it ran on (it may run apart from the rest: --only browser)."""
    return browser.run(WORKDIR / "stack", settings, command) | {"machine": report.machine()}


def run_live(settings: Settings, command: str) -> dict:
    """Part 9 alone, on a bench stack of its own (BENCH_LIVE_* may shrink it: local/bench/live.py)."""
    with bench_stack(WORKDIR / "stack") as bs:
        return live.run(bs, live.LiveConfig.from_env()) | {"command": command, "machine": report.machine()}


def run_api(settings: Settings, command: str) -> dict:
    """Part 6 alone, on a bench stack of its own."""
    with bench_stack(WORKDIR / "stack") as bs:
        return api_load.run(bs) | {"command": command, "machine": report.machine()}


def run_webhooks(settings: Settings, command: str) -> dict:
    """Part 10 alone, on a bench stack of its own (BENCH_WEBHOOKS_ROUNDS may shrink it)."""
    with bench_stack(WORKDIR / "stack") as bs:
        return webhooks.run(bs) | {"command": command, "machine": report.machine()}


ONLY = {"api": run_api, "browser": run_browser, "live": run_live, "webhooks": run_webhooks}  # the parts --only runs


def run_only(part: str, settings: Settings) -> None:
    """One part alone, merged into the last run's results (or into none, on a fresh checkout); after
    part 8 the cost model is redone where the capacity results it needs are there; the document rendered."""
    results: dict = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"command": COMMAND}
    step(part, results, lambda: ONLY[part](settings, ONLY_COMMAND.format(part=part)))
    if part == "browser" and "capacity" in results:
        results["cost"] = cost.model(results["capacity"], settings, results["browser"])
        RESULTS.write_text(json.dumps(results, indent=2))
    render(results)
    print(f"bench: {part} done; merged into {RESULTS.relative_to(REPO_ROOT)}, docs/benchmarks.md written")


# Each part's section of the document, from the results; a part missing from them leaves its
# section as the document has it (a part run alone, on a checkout with no full run's results).
SECTIONS = {
    "engines": lambda r: engines.render(r["engines"]),
    "overhead": lambda r: pipeline.render_overhead(r["overhead"]),
    "latency": lambda r: pipeline.render_latency(r["latency"]),
    "capacity": lambda r: pipeline.render_capacity(r["capacity"]),
    "peer": lambda r: peer.render(r["peer"], r["capacity"]),
    "api": lambda r: api_load.render(r["api"]),
    "browser": lambda r: browser.render(r["browser"]),
    "live": lambda r: live.render(r["live"], r.get("latency")),
    "webhooks": lambda r: webhooks.render(r["webhooks"]),
    "cost": lambda r: cost.render(r["cost"]),
}


def render(results: dict) -> None:
    sections = {name: body(results) + stamp(results, name) for name, body in SECTIONS.items() if name in results}
    if "capacity" in results and "peer" not in results:  # a full run with --skip-peer
        sections["peer"] = "Not run (--skip-peer)." + stamp(results, "peer")
    if "total_s" in results:  # a full run finished
        sections["machine"] = report.render_machine(results)
    report.write(sections)


def stamp(results: dict, name: str) -> str:
    """When, where and by which command a section was measured."""
    part = results.get(name, {})
    if isinstance(part, dict) and part.get("command", COMMAND) != COMMAND:
        m = part["machine"]  # measured apart from the full run, e.g. --only browser
        where = f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, commit {m['commit']}"
        return f"\n\n<sub>{m['date']}, {where}, `{part['command']}`.</sub>"
    return f"\n\n<sub>{results['machine']['date']}, the machine above, `{COMMAND}`.</sub>"


if __name__ == "__main__":
    main()
