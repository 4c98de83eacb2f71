"""`make bench`: every benchmark in one run; results in .vexa/bench/results.json and docs/benchmarks.md.

    python -m local.bench [--skip-peer]
    python -m local.bench --only browser   # part 8 alone, merged into the last run's results
    python -m local.bench --only live      # part 9 alone (on a stack of its own), merged likewise
    python -m local.bench --only api       # part 6 alone (on a stack of its own), merged likewise
    python -m local.bench --only webhooks  # part 10 alone (on a stack of its own), merged likewise
    python -m local.bench --only quality   # part 11 alone (on a stack of its own), merged likewise
    python -m local.bench --only options   # part 12 alone (no stack), merged likewise
    python -m local.bench --only pipeline  # parts 3, 4 and 5 alone (a stack of their own, then WhisperLive), merged likewise
    python -m local.bench --only latency   # part 3 alone (on a stack of its own), merged likewise
    python -m local.bench --only overload  # part 14 alone (on a stack of its own), merged likewise
    python -m local.bench --only cores     # part 15 alone (on a stack of its own), merged likewise
    python -m local.bench --only drafts    # part 13 alone (on a stack of its own), merged likewise
    python -m local.bench --render         # rewrite docs/benchmarks.md's tables from the last run's results

Order: the engines alone (no stack running), then the stack's parts (overhead,
latency, capacity, API load), then the stack stops and the peer runs on the
same, otherwise idle, machine; last, browser bots in simulated meetings, on a
fresh stack whose bots reach the meeting simulators (part 8). Live delivery
(part 9, the WebSocket feed) runs on the stack after the API load, and then part 10 (live
transcripts while the meeting's user has webhook endpoints, half never answering). That stack
makes no final transcripts (LIVE_ONLY); part 13 (drafts beside a saturated transcription
service), part 14 (twice part 4's capacity) and part 15 (meetings per transcription core, no
bots) end it. Part 11 (live and final transcripts of the held-back
recordings, and the final pass's cost) runs next, on a stack of its own. Part 12 (the
live path's options on the held-back recordings) runs with the engines, before any stack.
"""
from __future__ import annotations

import argparse
import json
import time

from functions.common.settings import REPO_ROOT, Settings, get_settings

from . import api_load, browser, cores, cost, drafts, engines, live, options, overload, peer, pipeline, quality, report, webhooks
from .sample import Sample
from .stack import bench_stack

WORKDIR = REPO_ROOT / ".vexa" / "bench"
# The live path alone: a meeting's final pass (FINAL_TRANSCRIPTS) would run on the same two cores
# during the next meetings' measurement. Part 11 measures it, on a stack of its own.
LIVE_ONLY = {"FINAL_TRANSCRIPTS": "0"}
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
        run_only(args.only, settings, args.skip_peer)
        return
    sample, clip = Sample.load(), Sample.load(pipeline.CAPACITY_CLIP_SECONDS)
    started = time.monotonic()
    results: dict = {"machine": report.machine(), "command": COMMAND}

    step("engines", results, lambda: engines.measure(settings, sample))
    step("options", results, lambda: options.run(settings))
    engine_alone = results["engines"]["as_service"]
    with bench_stack(WORKDIR / "stack", **LIVE_ONLY) as bs:
        step("overhead", results, lambda: pipeline.overhead(bs, sample, engine_alone))
        step("latency", results, lambda: pipeline.latency(bs, sample))
        step("capacity", results, lambda: pipeline.capacity(bs, clip))
        step("api", results, lambda: api_load.run(bs))
        step("live", results, lambda: live.run(bs, live.LiveConfig.from_env()))
        step("webhooks", results, lambda: webhooks.run(bs))
        step("drafts", results, lambda: drafts.run(bs))
        step("cores", results, lambda: cores.run(bs, clip, settings))
    step("overload", results, lambda: overload_both_ways(clip, results["capacity"]["largest_n"]))
    step("quality", results, lambda: run_quality(settings, COMMAND))
    if not args.skip_peer:
        step("peer", results, lambda: measure_peer(settings, results["capacity"], clip))
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


def run_quality(settings: Settings, command: str) -> dict:
    """Part 11 alone, on a bench stack of its own."""
    with bench_stack(WORKDIR / "stack") as bs:
        return quality.run(bs, settings) | {"command": command, "machine": report.machine()}


def run_pipeline(settings: Settings, command: str, skip_peer: bool = False) -> dict:
    """Parts 3, 4 and 5 alone: latency and capacity on a bench stack of their own, then (the stack
    stopped) WhisperLive on the same clip and steps; merged as three parts."""
    sample, clip = Sample.load(), Sample.load(pipeline.CAPACITY_CLIP_SECONDS)
    machine = report.machine()
    with bench_stack(WORKDIR / "stack", **LIVE_ONLY) as bs:
        measured = {"latency": pipeline.latency(bs, sample), "capacity": pipeline.capacity(bs, clip)}
    if not skip_peer:
        measured["peer"] = measure_peer(settings, measured["capacity"], clip)
    return {part: result | {"command": command, "machine": machine} for part, result in measured.items()}


def measure_peer(settings: Settings, capacity: dict, clip: Sample) -> dict:
    """Part 5: WhisperLive at part 4's steps, on the same clip and as many cores as our transcription process uses."""
    steps = [s["n"] for s in capacity["steps"]]
    return peer.measure(steps, clip, WORKDIR, settings.transcription_cores, pipeline.stagger, pipeline.holds_peer)


def run_latency(settings: Settings, command: str) -> dict:
    """Part 3 alone, on a bench stack of its own."""
    with bench_stack(WORKDIR / "stack", **LIVE_ONLY) as bs:
        return pipeline.latency(bs, Sample.load()) | {"command": command, "machine": report.machine()}


def run_overload(settings: Settings, command: str) -> dict:
    """Part 14 alone, on a bench stack of its own: twice the last run's capacity (part 4), or
    overload.CAPACITY where there is none."""
    last = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    capacity = last.get("capacity", {}).get("largest_n") or overload.CAPACITY
    result = overload_both_ways(Sample.load(pipeline.CAPACITY_CLIP_SECONDS), capacity)
    return result | {"command": command, "machine": report.machine()}


def overload_both_ways(clip: Sample, capacity: int) -> dict:
    """Part 14 on a stack of the defaults, then on one whose transcription decodes every chunk
    alone (overload.APART): what decoding a meeting's waiting chunks together buys."""
    with bench_stack(WORKDIR / "stack", **LIVE_ONLY) as bs:
        result = overload.run(bs, clip, capacity)
    with bench_stack(WORKDIR / "stack", **LIVE_ONLY, **overload.APART) as bs:
        return result | {"apart": overload.run(bs, clip, capacity)}


def run_cores(settings: Settings, command: str) -> dict:
    """Part 15 alone, on a bench stack of its own."""
    with bench_stack(WORKDIR / "stack", **LIVE_ONLY) as bs:
        result = cores.run(bs, Sample.load(pipeline.CAPACITY_CLIP_SECONDS), settings)
    return result | {"command": command, "machine": report.machine()}


def run_drafts(settings: Settings, command: str) -> dict:
    """Part 13 alone, on a bench stack of its own."""
    with bench_stack(WORKDIR / "stack", **LIVE_ONLY) as bs:
        return drafts.run(bs) | {"command": command, "machine": report.machine()}


def run_options(settings: Settings, command: str) -> dict:
    """Part 12 alone (no stack: the live path's simulation)."""
    return options.run(settings) | {"command": command, "machine": report.machine()}


ONLY = {"api": run_api, "browser": run_browser, "live": run_live, "webhooks": run_webhooks, "quality": run_quality,
        "options": run_options, "pipeline": run_pipeline, "drafts": run_drafts,
        "latency": run_latency, "overload": run_overload, "cores": run_cores}  # the parts --only runs


def run_only(part: str, settings: Settings, skip_peer: bool = False) -> None:
    """One part alone, merged into the last run's results (or into none, on a fresh checkout); after
    part 8 the cost model is redone where the capacity results it needs are there; the document rendered."""
    results: dict = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"command": COMMAND}
    command = ONLY_COMMAND.format(part=part)
    if part == "pipeline":  # three parts at once (two with --skip-peer)
        step(part, results, lambda: run_pipeline(settings, command + " --skip-peer" * skip_peer, skip_peer))
        results.update(results.pop("pipeline"))
        RESULTS.write_text(json.dumps(results, indent=2))
    else:
        step(part, results, lambda: ONLY[part](settings, command))
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
    "quality": lambda r: quality.render(r["quality"], r.get("cost")),
    "options": lambda r: options.render(r["options"]),
    "drafts": lambda r: drafts.render(r["drafts"]),
    "overload": lambda r: overload.render(r["overload"]),
    "cores": lambda r: cores.render(r["cores"]),
    "cost": lambda r: cost.render(r["cost"]),
}


def render(results: dict) -> None:
    sections = {name: body(results) + stamp(results, name) for name, body in SECTIONS.items() if name in results}
    if "total_s" in results and "peer" not in results:  # a full run with --skip-peer
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
