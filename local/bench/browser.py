"""Part 8: what a meeting-platform bot (Chromium, bot/browser/) costs per meeting, in CPU and memory.

One real `python -m bot` per platform (google_meet, teams, zoom) joins a simulated meeting
(local/simulators/) through the whole stack: POST /bot/run with the meeting's link,
the worker launches the bot as a process, the host lets it in after a second, Alice and
Bob play the sample meeting (63 s) over WebRTC, and the host ends the call two seconds
after the voices. Its chunks are really transcribed, so the transcript's WER shows the bot
heard the meeting. For comparison, one `file` bot replays the same sample in real time.

The bot's whole process tree is sampled every SAMPLE_SECONDS with psutil: the Python
process, its Xvfb display, Playwright's node driver and Chromium's browser, zygote, renderer, GPU and utility
processes. Per process the CPU-seconds (user + system) of its last reading are kept after it
exits (what it spends in its last half second, while leaving, is missed). Chromium's crash
handlers detach (their parent is init) and are not counted: about 8 MiB. Memory
is summed over the tree two ways: RSS counts a page shared by several Chromium processes
once per process, so its sum overstates; PSS divides each shared page among its sharers,
so the summed PSS is the tree's footprint, the figure to compare with a memory limit. (Sharers
outside the tree take their share too: the stack's Python services map the bot's Python
libraries (alone in a pod, about 40 MiB more would be the bot's), and another Chromium on the
machine maps Chromium's files, halving the tree's file-backed PSS while it runs; such a
Chromium is looked for and reported.) Of the PSS, the anonymous and shared-memory
part is what a pod without swap can never give back under its limit; the file-backed rest
(Chromium's code, fonts) can be dropped and read again, at a cost.

Phases: joining is from the bot process's start (Chromium's start-up included) to the
`active` status bot-manager recorded; the rest, to the process's exit, is the meeting
(leaving and draining included, so the per-hour rate slightly overstates). CPU-seconds per
meeting-hour = the join's CPU-seconds + the meeting's average cores × 3600.

    python -m local.bench --only browser
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterator
from unittest import mock

import psutil

from functions.common.lifecycle import TERMINAL, MeetingStatus
from functions.common.settings import Settings
from local.simulators.control import Simulator, new_meeting_key
from local.wer import word_error_rate

from .cost import mebibytes, millicores
from .report import table
from .sample import RECORDING, Sample
from .stack import BenchStack, bench_stack

PLATFORMS = ("google_meet", "teams", "zoom")
END_AFTER_AUDIO_SECONDS = 2.0  # the host ends the call this long after the voices finish
SAMPLE_SECONDS = 0.5
ELSEWHERE_EVERY = 10  # readings between looks for other Chromium processes (listing all processes costs)
MEETING_TIMEOUT_SECONDS = 180.0  # a 63 s meeting plus joining, leaving and draining, with room
USER = "bench-browser"
MIB = 2**20

# Process kinds, in the order tables list them.
KINDS = ("bot (Python)", "Playwright driver (node)", "Chromium browser", "Chromium renderer",
         "Chromium GPU", "Chromium utility", "Chromium other", "Xvfb display")  # fmt: skip


@dataclass
class Reading:
    at: float  # wall time
    cpu_s: float  # CPU-seconds of every process of the tree seen so far, since each started
    pss: int  # bytes, summed over the tree's processes at this instant
    pss_unreclaimable: int  # the part of pss that is anonymous or shared memory (no swap: never given back)
    rss: int
    processes: int


@dataclass
class TreeMeter:
    """A process and all its descendants, sampled every SAMPLE_SECONDS from a thread of its own."""

    root: int
    started: float  # wall time the root process started (it had used no CPU then)
    readings: list[Reading] = field(default_factory=list)
    cpu_by_pid: dict[int, float] = field(default_factory=dict)  # a process's last value stands once it exits
    kind_by_pid: dict[int, str] = field(default_factory=dict)
    peak_pss_by_kind: dict[str, int] = field(default_factory=dict)
    chromium_elsewhere: int = 0  # most Chromium processes seen outside the tree (checked every ELSEWHERE_EVERY readings)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bench-tree-meter", daemon=True)

    def __enter__(self) -> "TreeMeter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set() and self._sample():
            self._stop.wait(SAMPLE_SECONDS)

    def _sample(self) -> bool:
        """One reading; False once the root process is gone."""
        try:
            root = psutil.Process(self.root)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return False
        totals = {"Pss": 0, "Pss_Anon": 0, "Pss_Shmem": 0, "Rss": 0}
        pss_by_kind: dict[str, int] = {}
        for process in tree:
            try:
                times = process.cpu_times()
                memory = smaps_rollup(process.pid)
                kind = self.kind_by_pid.get(process.pid) or _kind(process, self.root)
            except (psutil.Error, OSError):
                continue  # it exited between listing and reading
            self.kind_by_pid[process.pid] = kind
            self.cpu_by_pid[process.pid] = times.user + times.system
            for name in totals:
                totals[name] += memory.get(name, 0)
            pss_by_kind[kind] = pss_by_kind.get(kind, 0) + memory["Pss"]
        for kind, value in pss_by_kind.items():
            self.peak_pss_by_kind[kind] = max(value, self.peak_pss_by_kind.get(kind, 0))
        if len(self.readings) % ELSEWHERE_EVERY == 0:
            self.chromium_elsewhere = max(self.chromium_elsewhere, chromium_elsewhere({p.pid for p in tree}))
        unreclaimable = totals["Pss_Anon"] + totals["Pss_Shmem"]
        cpu = sum(self.cpu_by_pid.values())
        self.readings.append(Reading(time.time(), cpu, totals["Pss"], unreclaimable, totals["Rss"], len(tree)))
        return True

    def cpu_at(self, moment: float) -> float:
        """CPU-seconds of the tree at `moment`, interpolated between the readings around it
        (a `file` bot is active within half a sampling interval of its start)."""
        previous = Reading(self.started, 0.0, 0, 0, 0, 0)
        for reading in self.readings:
            if reading.at >= moment:
                share = (moment - previous.at) / (reading.at - previous.at) if reading.at > previous.at else 1.0
                return previous.cpu_s + max(0.0, share) * (reading.cpu_s - previous.cpu_s)
            previous = reading
        return previous.cpu_s

    def cpu_by_kind(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for pid, seconds in self.cpu_by_pid.items():
            totals[self.kind_by_pid[pid]] = totals.get(self.kind_by_pid[pid], 0.0) + seconds
        return totals


def chromium_elsewhere(tree: set[int]) -> int:
    """Chromium processes outside the measured tree (a test's, another bot's). They map the same
    Chromium files, so the tree's file-backed PSS shrinks while they run: its PSS is then low."""
    return sum(1 for p in psutil.process_iter(["name"]) if p.info["name"] == "chromium" and p.pid not in tree)


def smaps_rollup(pid: int) -> dict[str, int]:
    """A process's memory totals in bytes (Rss, Pss, Pss_Anon, Pss_File, Pss_Shmem, ...), as the kernel sums
    its mappings: the file psutil's memory_full_info() reads its PSS from, which also splits PSS by kind."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        values[name] = int(rest.split()[0]) * 1024  # the kernel writes kB
    return values


def _kind(process: psutil.Process, root: int) -> str:
    if process.pid == root:
        return KINDS[0]
    command = " ".join(process.cmdline())
    if "node" in process.name() or "run-driver" in command:
        return KINDS[1]
    if process.name() == "Xvfb":
        return KINDS[7]
    if "--type=" not in command:
        return KINDS[2]
    for flag, kind in (("--type=renderer", KINDS[3]), ("--type=gpu-process", KINDS[4]), ("--type=utility", KINDS[5])):
        if flag in command:
            return kind
    return KINDS[6]  # zygote, crashpad


@contextmanager
def stack_with_simulator(state: Path) -> Iterator[tuple[BenchStack, Simulator]]:
    """The bench stack, whose bots' Chromium resolves the platforms' hosts to a local simulator."""
    sim = Simulator.start()
    try:
        # bench_stack builds the stack's environment from ours, once, as it starts.
        with mock.patch.dict(os.environ, {"BOT_BROWSER_HOST_RULES": sim.host_rules}), bench_stack(state) as bs:
            yield bs, sim
    finally:
        sim.stop()


def run(state: Path, settings: Settings, command: str) -> dict:
    """Part 8 on a stack of its own under `state`: the browser bots, then the file bot."""
    sample = Sample.load()
    with stack_with_simulator(state) as (bs, sim):
        bots = {platform: browser_meeting(bs, sim, platform, sample.text) for platform in PLATFORMS}
        bots["file"] = file_meeting(bs, sample.text)
    return {
        "sample_s": round(sample.seconds, 1),
        "end_after_audio_s": END_AFTER_AUDIO_SECONDS,
        "sample_every_s": SAMPLE_SECONDS,
        "bots": bots,
        # What a meeting-platform bot's Job is given (job_spec._resources).
        "job": {"cpu_request": settings.browser_bot_cpu_request, "cpu_limit": settings.browser_bot_cpu_limit,
                "memory_request": settings.browser_bot_memory_request,
                "memory_limit": settings.browser_bot_memory_limit},  # fmt: skip
        "cpu_count": os.cpu_count(),
        "command": command,
    }


def browser_meeting(bs: BenchStack, sim: Simulator, platform: str, reference: str) -> dict:
    """One bot in a simulated `platform` meeting: admitted after a second, ended after the voices."""
    key = new_meeting_key(platform)
    sim.meeting(platform, key).configure(end_after_audio=END_AFTER_AUDIO_SECONDS)
    body = {"meeting_id": f"{platform}-{uuid.uuid4().hex[:6]}", "meeting_url": sim.url(platform, key)}
    return measure_bot(bs, body, reference)


def file_meeting(bs: BenchStack, reference: str) -> dict:
    """The same sample replayed from the file by a `file` bot, in real time."""
    body = {"meeting_id": f"file-{uuid.uuid4().hex[:6]}", "platform": "file",
            "meeting_url": str(RECORDING), "replay_speed": 1.0}  # fmt: skip
    return measure_bot(bs, body, reference)


def measure_bot(bs: BenchStack, body: dict, reference: str) -> dict:
    """POST /bot/run with `body`, meter the bot's process tree until it exits; its figures."""
    before = _bot_folders(bs)
    requested = time.time()
    response = bs.api("POST", "/bot/run", USER, json={"user_id": USER, **body})
    if response.status_code != 201:
        raise RuntimeError(f"POST /bot/run: {response.status_code} {response.text}")
    pid, started = _new_bot(bs, before)
    with TreeMeter(pid, started) as meter:
        done = _wait_terminal(bs, body["meeting_id"])
        _wait_exit(pid)
    transcript = " ".join(s["text"] for s in done["segments"])
    return _figures(meter, done, requested, started, word_error_rate(reference, transcript))


def _bot_folders(bs: BenchStack) -> set[str]:
    return {p.name for p in bs.bots_dir.iterdir()} if bs.bots_dir.exists() else set()


def _new_bot(bs: BenchStack, before: set[str], timeout: float = 60.0) -> tuple[int, float]:
    """The process id of the bot the worker launched after `before` was taken, and when it started.

    The start is the time its watcher wrote the pid file, right after starting it: psutil's
    create_time() counts from the boot time, which Linux gives in whole seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in _bot_folders(bs) - before:
            pid_file = bs.bots_dir / name / "pid"
            if pid_file.exists() and (text := pid_file.read_text().strip()):
                return int(text), pid_file.stat().st_mtime
        time.sleep(0.05)  # sampling must start right after the process does: start-up is measured
    raise RuntimeError(f"no bot process appeared within {timeout:g} s")


def _wait_terminal(bs: BenchStack, meeting_id: str) -> dict:
    deadline = time.monotonic() + MEETING_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        response = bs.api("GET", f"/transcript/{USER}/{meeting_id}", USER)
        if response.status_code == 200 and (body := response.json())["meeting"]["status"] in TERMINAL:
            return body
        time.sleep(1.0)  # slow polling: the stack's own CPU is not what this part measures
    raise RuntimeError(f"meeting {meeting_id} did not end within {MEETING_TIMEOUT_SECONDS:g} s")


def _wait_exit(pid: int, timeout: float = 60.0) -> None:
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.NoSuchProcess:
        pass


def _figures(meter: TreeMeter, done: dict, requested: float, started: float, wer: float) -> dict:
    meeting = done["meeting"]
    if meeting["status"] != MeetingStatus.COMPLETED:
        raise RuntimeError(f"the bot's meeting {meeting['status']}: {meeting['status_reason']}")
    active = next(datetime.fromisoformat(c["at"]).timestamp() for c in meeting["history"] if c["to"] == MeetingStatus.ACTIVE)
    readings = meter.readings
    ended = readings[-1].at  # the last reading before the process exited
    join_cpu, total_cpu = meter.cpu_at(active), readings[-1].cpu_s
    cores = (total_cpu - join_cpu) / (ended - active)
    return {
        "status_reason": meeting["status_reason"],
        "join_s": round(active - started, 1),  # bot process start -> active
        "join_from_request_s": round(active - requested, 1),  # POST /bot/run -> active (launch included)
        "meeting_s": round(ended - active, 1),
        "join_cpu_s": round(join_cpu, 2),
        "meeting_cpu_s": round(total_cpu - join_cpu, 2),
        "meeting_cores": round(cores, 3),
        "cpu_s_per_meeting_hour": round(join_cpu + cores * 3600),
        "peak_pss_mib": round(max(r.pss for r in readings) / MIB),
        "peak_pss_unreclaimable_mib": round(max(r.pss_unreclaimable for r in readings) / MIB),
        "peak_pss_file_mib": round(max(r.pss - r.pss_unreclaimable for r in readings) / MIB),
        "peak_rss_mib": round(max(r.rss for r in readings) / MIB),
        "max_processes": max(r.processes for r in readings),
        "chromium_elsewhere": meter.chromium_elsewhere,
        "cpu_s_by_kind": {k: round(v, 1) for k, v in _by_kind(meter.cpu_by_kind())},
        "peak_pss_mib_by_kind": {k: round(v / MIB) for k, v in _by_kind(meter.peak_pss_by_kind)},
        "segments": len(done["segments"]),
        "wer": round(wer, 1),
        # [seconds since the process started, CPU-seconds so far, PSS MiB, of it unreclaimable MiB, RSS MiB]
        "timeline": [[round(r.at - started, 1), round(r.cpu_s, 2), round(r.pss / MIB), round(r.pss_unreclaimable / MIB),
                      round(r.rss / MIB)] for r in readings],  # fmt: skip
    }


def _by_kind(values: dict) -> list[tuple]:
    return sorted(values.items(), key=lambda kv: KINDS.index(kv[0]))


def largest_browser(result: dict) -> tuple[str, dict]:
    """The browser bot with the highest peak PSS, and its figures."""
    return max(((p, b) for p, b in result["bots"].items() if p != "file"), key=lambda pb: pb[1]["peak_pss_mib"])


def render(result: dict) -> str:
    bots = result["bots"]
    rows = [
        [name, b["join_s"], b["join_cpu_s"], b["meeting_cores"], b["cpu_s_per_meeting_hour"], b["peak_pss_mib"],
         b["peak_pss_unreclaimable_mib"], b.get("peak_pss_file_mib"), b["peak_rss_mib"], b["max_processes"], b["wer"]]
        for name, b in bots.items()
    ]  # fmt: skip
    header = ["bot", "join s", "CPU-s to join", "cores in meeting", "CPU-s per meeting-hour", "peak PSS MiB",
              "peak anon + shmem PSS MiB", "peak file-backed PSS MiB", "peak RSS MiB (overcounts)", "processes",
              "WER %"]  # fmt: skip
    browsers = [name for name in bots if name != "file"]
    kinds = [k for k in KINDS if any(k in bots[name]["cpu_s_by_kind"] for name in browsers)]
    where = [[kind] + [_cpu_and_pss(bots[name], kind) for name in browsers] for kind in kinds]
    return (
        f"Each bot in a simulated meeting of its platform: let in after 1 s, the {result['sample_s']} s sample played by "
        f"two participants over WebRTC, the call ended {result['end_after_audio_s']:g} s after the voices; then a `file` "
        f"bot replaying the sample in real time. One bot at a time, through the whole stack (its chunks transcribed: "
        f"WER shows the bot heard the meeting); the bot's process tree sampled every {result['sample_every_s']} s. Join: "
        f"bot process start → `active`, Chromium's start included. PSS sums each shared page once; RSS counts it in "
        f"every process that maps it.\n\n"
        + table(header, rows)
        + shared_note(bots)
        + "\n\nWhere a browser bot's CPU-seconds (whole meeting) and peak PSS MiB go, by process:\n\n"
        + table(["process", *browsers], where)
        + "\n\n"
        + verdict(result)
    )


def _cpu_and_pss(bot: dict, kind: str) -> str:
    return f"{bot['cpu_s_by_kind'].get(kind, 0)} / {bot['peak_pss_mib_by_kind'].get(kind, 0)}"


def shared_note(bots: dict) -> str:
    """A warning where another Chromium ran beside a measured bot (its PSS is then understated)."""
    beside = {name: b["chromium_elsewhere"] for name, b in bots.items() if name != "file" and b.get("chromium_elsewhere")}
    if not beside:
        return ""
    which = ", ".join(f"{name} (up to {n} processes)" for name, n in beside.items())
    return (f"\n\nAnother Chromium ran on the machine during part of {which}. While it runs it shares Chromium's "
            "files with the bot, whose file-backed PSS then halves (its anonymous memory does not change): a bot that "
            "never ran alone shows a lower peak PSS than it needs.")


def verdict(result: dict) -> str:
    """The largest browser bot against the bot Job's requests and limits."""
    job = result["job"]
    worst, b = largest_browser(result)
    limit, request = mebibytes(job["memory_limit"]), mebibytes(job["memory_request"])
    cpu_limit = millicores(job["cpu_limit"]) / 1000
    fits = "within" if b["peak_pss_mib"] <= limit else "**over**"
    return (
        f"A meeting-platform bot's Job (BROWSER_BOT_*): requests {job['cpu_request']} CPU and {job['memory_request']}, limits {job['cpu_limit']} "
        f"CPU and {job['memory_limit']}. The largest browser bot ({worst}) peaked at {b['peak_pss_mib']} MiB PSS, {fits} "
        f"the {limit:g} MiB limit and {b['peak_pss_mib'] / request:.1f}× the request; {b['peak_pss_unreclaimable_mib']} "
        f"MiB of it anonymous or shared memory, which without swap cannot be given back. In the meeting it used "
        f"{b['meeting_cores']} cores; joining took {b['join_cpu_s']} CPU-seconds in {b['join_s']} s, "
        f"{b['join_cpu_s'] / b['join_s']:.2f} cores on average against a limit of {cpu_limit:g}."
    )

