"""CPU seconds and peak memory of processes while a benchmark runs."""
from __future__ import annotations

import threading
from typing import Callable

import psutil


class ResourceMeter:
    """CPU seconds and peak RSS of processes (and their children) while it runs, sampled every 0.5 s.

    Processes that come and go (bots) are picked up by `discover` on each sample;
    a process's last sample stands once it exits.
    """

    def __init__(self, discover: Callable[[], dict[str, int]]) -> None:
        self._discover = discover  # the processes to watch now, by name
        self._cpu: dict[str, float] = {}
        self._first_cpu: dict[str, float] = {}
        self._peak_rss: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ResourceMeter":
        self._sample()
        self._first_cpu = dict(self._cpu)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def _sample(self) -> None:
        for name, pid in self._discover().items():
            try:
                root = psutil.Process(pid)
                tree = [root, *root.children(recursive=True)]
                cpu = sum(sum(p.cpu_times()[:2]) for p in tree)
                rss = sum(p.memory_info().rss for p in tree)
            except psutil.Error:
                continue  # it exited between listing and reading
            self._cpu[name] = cpu
            self._peak_rss[name] = max(rss, self._peak_rss.get(name, 0))

    def cpu_seconds(self, name: str) -> float:
        return self._cpu.get(name, 0.0) - self._first_cpu.get(name, 0.0)

    def peak_rss_mib(self, name: str) -> float:
        return self._peak_rss.get(name, 0) / 2**20

    def names(self) -> list[str]:
        return sorted(self._cpu)
