"""docs/benchmarks.md: written prose, with tables the benchmark run fills in.

Each generated table sits between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`;
a run replaces what is between the markers and leaves everything else as written.
"""
from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import psutil

from functions.common.settings import REPO_ROOT

DOCUMENT = REPO_ROOT / "docs" / "benchmarks.md"


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (linear between the closest ranks, as NumPy's default), to 0.01; None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 2)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1], 2)


def machine() -> dict:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        platform.processor() or "unknown CPU",
    )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    # The document this run writes does not count as a change to what was measured.
    dirty = subprocess.run(["git", "status", "--porcelain", "--", ".", f":!{DOCUMENT.relative_to(REPO_ROOT)}"],
                           cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()  # fmt: skip
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
    }


def fill(document: str, sections: dict[str, str]) -> str:
    """`document` with each marked section's body replaced; a marker missing from it is an error."""
    for name, body in sections.items():
        pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
        if not pattern.search(document):
            raise ValueError(f"{DOCUMENT.name} has no <!-- bench:{name} --> section")
        document = pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), document)
    return document


def write(sections: dict[str, str], path: Path = DOCUMENT) -> None:
    path.write_text(fill(path.read_text(), sections))


def table(header: list[str], rows: list[list], align: str | None = None) -> str:
    """A Markdown table; `align` is one character per column, l or r (default: first l, rest r)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join("–" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_machine(results: dict) -> str:
    m = results["machine"]
    return (
        f"Measured on {m['date']}: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, Python "
        f"{m['python']}, commit {m['commit']}. Reproduce with `{results['command']}` "
        f"(this run took {results['total_s'] / 60:.1f} min; raw numbers in `.vexa/bench/results.json`)."
    )
