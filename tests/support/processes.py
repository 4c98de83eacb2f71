"""Service processes the tests start themselves (gunicorn, outside a whole stack)."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import requests


def wait_healthy(url: str, process: subprocess.Popen, log_path: Path, timeout: float, what: str) -> None:
    """Until `url`/healthz answers 200; AssertionError with `process`'s log if it exits or takes longer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited:\n{log_path.read_text()}")
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or the worker is still booting
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} did not become healthy:\n{log_path.read_text()}")
