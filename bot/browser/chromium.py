"""The bot's browser: Chromium configured as a person's would be, on a display of its own.

Meeting platforms turn away browsers that look automated (Google Meet's "You can't join this
video call"), so the bot runs what production meeting bots run: a headful Chromium on a
virtual X display (Xvfb), with none of the automation tells a page can read, an en-US UI
(the data files' texts are English), a screen larger than the window, and the user agent the
browser really has, so that it agrees with its client hints. Every peer bot cited in
README ("Real meeting platforms") runs headful under Xvfb with AutomationControlled off.
tests/browser/test_automation_tells.py checks what a page can see.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Playwright

from .account import SWITCHER, BrowserAccount, browser_environ
from .spec import PROBES_SCRIPT

CAPTURE_SCRIPT = Path(__file__).resolve().parent / "capture.js"
SCREEN = (1920, 1080)  # the virtual display: a common desktop size
WINDOW = (1280, 800)  # the browser window on it; the page gets what the window's frame leaves
LOCALE = "en-US"
DISPLAY_STOP_SECONDS = 10.0
XVFB = "Xvfb"
PR_SET_PDEATHSIG = 1  # linux/prctl.h

FLAGS = [
    "--disable-blink-features=AutomationControlled",  # navigator.webdriver stays false
    f"--lang={LOCALE}",
    f"--accept-lang={LOCALE},en",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
    "--window-position=0,0",
    "--use-fake-ui-for-media-stream",  # grant camera/microphone prompts...
    "--use-fake-device-for-media-stream",  # ...with fake devices: the bot sends nothing real
    "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",  # the meeting is captured inside the page (capture.js), never played aloud
    "--disable-background-networking",  # no update checks or sync: only the meeting's traffic
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",  # containers' /dev/shm is 64 MB
    # WebGL through Mesa on the X display, as on a Linux desktop without a GPU driver
    # ("llvmpipe"), not Chromium's own SwiftShader fallback, which fingerprints as headless.
    "--use-angle=gl",
    "--ignore-gpu-blocklist",
    "--no-sandbox",  # the pod is the sandbox: non-root, no capabilities, seccomp RuntimeDefault
]
# Playwright's defaults that a page can notice: --enable-automation sets navigator.webdriver.
DROPPED_DEFAULTS = ["--enable-automation"]


class BrowserError(RuntimeError):
    """The display or the browser could not be started; the message says which and why."""


class VirtualDisplay:
    """An Xvfb server on the first free display number, for one browser (as its account, if any)."""

    def __init__(self, xvfb: str = XVFB, account: BrowserAccount | None = None) -> None:
        self.xvfb = xvfb
        self.account = account
        self.process: subprocess.Popen[bytes] | None = None
        # Its messages go to a file, not a pipe: a pipe nobody reads would stall it once full.
        self.messages = tempfile.TemporaryFile()

    def start(self) -> str:
        """Start the server; the DISPLAY value that reaches it."""
        executable = shutil.which(self.xvfb)
        if executable is None:
            raise BrowserError(f"{self.xvfb} is not installed (Debian: apt-get install xvfb)")
        read_end, write_end = os.pipe()
        try:
            # -displayfd: Xvfb picks a free display number and writes it here once it listens.
            self.process = subprocess.Popen(
                [executable, "-displayfd", str(write_end), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24",
                 "-nolisten", "tcp", "-noreset"],
                pass_fds=(write_end,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.messages,
                env=browser_environ(), preexec_fn=_die_with_parent, **_as_account(self.account),
            )  # fmt: skip
        finally:
            os.close(write_end)
        with os.fdopen(read_end, "rb") as announced:
            number = announced.readline().strip()  # empty when Xvfb exits first
        if not number:
            self.stop()
            self.messages.seek(0)
            last = self.messages.read().decode(errors="replace").strip().splitlines()[-1:]
            raise BrowserError(f"Xvfb did not start: {last[0] if last else 'no display number announced'}")
        return f":{number.decode()}"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=DISPLAY_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _as_account(account: BrowserAccount | None) -> dict:
    """Popen's arguments that start a program as `account` (none: as the bot)."""
    if account is None:
        return {}
    return {"user": account.uid, "group": account.gid, "extra_groups": [], "cwd": account.home}


def _die_with_parent() -> None:
    """In the child, before exec: a bot killed outright takes its display with it."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def register_probes(playwright: Playwright) -> None:
    """Make "probe=<probe>" a selector (probes.js); before any browser context is created."""
    playwright.selectors.register("probe", script=PROBES_SCRIPT.read_text())


def launch(
    playwright: Playwright, chromium_path: str, display: str, host_rules: str = "", account: BrowserAccount | None = None
) -> Browser:
    """The bot's Chromium on `display`, as `account` if any; `host_rules` maps platform hosts elsewhere (tests)."""
    args = list(FLAGS)
    if host_rules:
        args.append(f"--host-resolver-rules={host_rules}")
    env = browser_environ() | {"DISPLAY": display}
    executable = chromium_path
    if account is not None:
        env |= account.browser_environ(chromium_path)
        executable = str(SWITCHER)
    return playwright.chromium.launch(
        executable_path=executable, headless=False, args=args, ignore_default_args=DROPPED_DEFAULTS, env=env,
    )  # fmt: skip


def meeting_context(browser: Browser, insecure_hosts: bool = False) -> BrowserContext:
    """A fresh profile with capture.js (and the probe reader it uses) in every page.

    `insecure_hosts`: accept any certificate; only for host rules that lead to a simulator,
    whose certificate cannot be the platform's.
    """
    context = browser.new_context(no_viewport=True, locale=LOCALE, ignore_https_errors=insecure_hosts)
    context.add_init_script(script=f"window.__vexaProbe = {PROBES_SCRIPT.read_text()};")
    context.add_init_script(path=str(CAPTURE_SCRIPT))
    return context
