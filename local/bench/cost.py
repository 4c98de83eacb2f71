"""Part 7: the cost model, derived from the capacity run's measurements and, where part 8 ran, the
browser bots' (nothing here is assumed but the example node and the headroom, both stated in the output)."""
from __future__ import annotations

import math

from functions.common.settings import Settings

from .report import table

NODE_CORES, NODE_GIB = 4, 16  # the example node the cluster figures are for
TARGET_UTILISATION = 0.7  # transcription workers are sized to run at most this busy
PLATFORM = ("gateway", "bot-manager", "broker", "celery-worker", "celery-beat", "postgres", "redis")


def model(capacity: dict, settings: Settings, browser: dict | None = None) -> dict:
    """Per meeting-hour costs from the largest capacity step that held (or N=1 if none did); with
    part 8's results (`browser`), a meeting-platform bot's next to the `file` bot's."""
    steps = {s["n"]: s for s in capacity["steps"]}
    step = steps.get(capacity["largest_n"]) or steps[min(steps)]
    meeting_hours = step["meetings"] * capacity["clip_s"] / 3600
    cpu = step["cpu_s"]

    def per_hour(seconds: float) -> float:
        return round(seconds / meeting_hours)

    bot_cores = cpu["bots"] / (step["meetings"] * capacity["clip_s"])
    transcription_cores = cpu["transcription"] / (step["meetings"] * capacity["clip_s"])
    bot_rss_mib = step["peak_rss_mib"]["bot"]
    worker_cores = settings.transcription_cores
    meetings_per_worker = math.floor(worker_cores * TARGET_UTILISATION / transcription_cores)
    return {
        "from_step_n": step["n"],
        "cpu_s_per_meeting_hour": {
            "bot": per_hour(cpu["bots"]),
            "transcription": per_hour(cpu["transcription"]),
            "platform": per_hour(sum(cpu.get(name, 0.0) for name in PLATFORM)),
        },
        "bot_cores": round(bot_cores, 3),
        "bot_peak_rss_mib": bot_rss_mib,
        "bots_per_node": {
            "by_cpu_measured": math.floor(NODE_CORES / bot_cores),
            "by_memory_measured": math.floor(NODE_GIB * 1024 / bot_rss_mib),
            "by_requests": min(
                math.floor(NODE_CORES * 1000 / millicores(settings.bot_cpu_request)),
                math.floor(NODE_GIB * 1024 / mebibytes(settings.bot_memory_request)),
            ),
        },
        "bot_requests": {"cpu": settings.bot_cpu_request, "memory": settings.bot_memory_request},
        "transcription_worker": {
            "cores": worker_cores,
            "meetings": meetings_per_worker,
            "workers_for_100_meetings": math.ceil(100 / meetings_per_worker) if meetings_per_worker else None,
            "peak_rss_mib": step["peak_rss_mib"]["transcription"],
        },
    } | ({"browser_bot": browser_bot(browser)} if browser else {})


def browser_bot(browser: dict) -> dict:
    """The costliest of the platforms' browser bots (part 8), each figure its own platform's worst."""
    bots = [b for name, b in browser["bots"].items() if name != "file"]
    cores = max(b["meeting_cores"] for b in bots)
    pss = max(b["peak_pss_mib"] for b in bots)
    return {
        "platforms": [name for name in browser["bots"] if name != "file"],
        "cpu_s_per_meeting_hour": max(b["cpu_s_per_meeting_hour"] for b in bots),
        "cores": cores,
        "peak_pss_mib": pss,
        "per_node": {"by_cpu_measured": math.floor(NODE_CORES / cores), "by_memory_measured": math.floor(NODE_GIB * 1024 / pss)},
    }


def millicores(quantity: str) -> float:
    """A Kubernetes CPU quantity (250m, 1, 0.5) in millicores."""
    return float(quantity[:-1]) if quantity.endswith("m") else float(quantity) * 1000


def mebibytes(quantity: str) -> float:
    """A Kubernetes memory quantity (256Mi, 1Gi, or bytes) in MiB."""
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity) / 2**20


def render(result: dict) -> str:
    per_hour = result["cpu_s_per_meeting_hour"]
    per_node = result["bots_per_node"]
    worker = result["transcription_worker"]
    rows = [
        ["`file` bot (one per meeting)", per_hour["bot"], f"{result['bot_cores']} cores, peak {result['bot_peak_rss_mib']} MiB"],
        *_browser_row(result),
        ["transcription", per_hour["transcription"], f"one process ({worker['cores']} cores) carries {worker['meetings']} meetings at {TARGET_UTILISATION:.0%} busy"],
        ["platform (gateway, bot-manager, broker, Celery, PostgreSQL, Redis)", per_hour["platform"],
         "includes the benchmark's own polling of GET /transcript five times a second per meeting"],
    ]  # fmt: skip
    lines = [
        f"From the capacity step with N = {result['from_step_n']} meetings.",
        "",
        table(["component", "CPU-seconds per meeting-hour", "what it means"], rows, "lrl"),
        "",
        f"On a {NODE_CORES}-core, {NODE_GIB} GiB node: `file` bots fit {per_node['by_cpu_measured']} by measured CPU and "
        f"{per_node['by_memory_measured']} by measured memory, but {per_node['by_requests']} by the Job's requests "
        f"({result['bot_requests']['cpu']} CPU, {result['bot_requests']['memory']}); the requests are what the "
        "scheduler packs by, so they are what a cluster pays for.",
        *_browser_fit(result),
        f"For 100 concurrent meetings: {worker['workers_for_100_meetings']} transcription pods of "
        f"{worker['cores']} cores ({worker['peak_rss_mib']} MiB each), on CPU with tiny.en.",
    ]
    return "\n".join(lines)


def _browser_row(result: dict) -> list[list]:
    if "browser_bot" not in result:
        return []
    b = result["browser_bot"]
    return [["browser bot (one per meeting; part 8, simulated meetings)", b["cpu_s_per_meeting_hour"],
             f"{b['cores']} cores, peak {b['peak_pss_mib']} MiB PSS; the costliest of {', '.join(b['platforms'])}"]]  # fmt: skip


def _browser_fit(result: dict) -> list[str]:
    if "browser_bot" not in result:
        return []
    fit = result["browser_bot"]["per_node"]
    return [f"Browser bots fit {fit['by_cpu_measured']} by measured CPU and {fit['by_memory_measured']} by measured memory (PSS)."]
