"""A bot started as root runs its browser as BROWSER_USER: a page cannot act as root or read the bot's key.

`make up` (and this suite, tests/conftest.py) creates the account on a machine where it runs as
root; the bot process stays root, its Chromium and Xvfb do not (bot/browser/account.py).
"""
from __future__ import annotations

import logging
import os
import pwd
import shutil
from pathlib import Path
from typing import Callable

import pytest

from bot.browser.account import browser_account
from functions.common.bot_config import ENV_NAMES
from functions.common.events import BotState, EventType
from functions.common.settings import Settings
from tests.browser.test_browser_bot import VOICES, Scene

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only a bot started as root switches its browser's account")
ACCOUNT = Settings.from_env().browser_user
SESSION_KEY_ENV = ENV_NAMES["session_key"].encode()


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # it ended while we looked
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        found.extend(kids := children.get(todo.pop(), []))
        todo.extend(kids)
    return found


def uids(pid: int) -> tuple[int, int]:
    """A process's real and effective uid."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:"))
    real, effective = line.split()[1:3]
    return int(real), int(effective)


def program(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")


def test_chromium_and_its_display_run_as_the_browser_account_without_the_bot_s_key(scene: Callable[..., Scene]) -> None:
    account = pwd.getpwnam(ACCOUNT)  # made by the suite as `make up` makes it
    s = scene("google_meet", participants=VOICES)
    s.send_bot()
    s.bot.wait_for(lambda: BotState.ACTIVE in s.sink.states(), "the bot in the meeting", timeout=60)
    s.bot.wait_for(lambda: s.sink.of_type(EventType.AUDIO_CHUNK), "audio from the meeting", timeout=60)

    browser_processes = {pid: program(pid) for pid in descendants(s.bot.process.pid)}
    chromium = [pid for pid, name in browser_processes.items() if "chrom" in Path(name).name]
    xvfb = [pid for pid, name in browser_processes.items() if Path(name).name == "Xvfb"]
    assert chromium and xvfb, f"the bot's processes: {browser_processes}"
    assert uids(s.bot.process.pid) == (0, 0), "the bot itself stays as it was started"
    for pid in chromium + xvfb:
        assert uids(pid) == (account.pw_uid, account.pw_uid), f"{browser_processes[pid]} runs as {uids(pid)}"
        # Another account's environment is closed to the page's process; its own must not hold the key either.
        assert SESSION_KEY_ENV not in Path(f"/proc/{pid}/environ").read_bytes(), browser_processes[pid]

    s.meeting.end()
    final = s.finished()
    assert final.state == BotState.LEFT, "the bot hears, follows and leaves the meeting as before"


def test_without_a_usable_account_the_browser_stays_as_the_bot_and_the_log_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chromium = Settings.from_env().chromium_path
    caplog.set_level(logging.WARNING, logger="bot.browser.account")
    assert browser_account("no-such-account", [chromium]) is None
    assert "there is no account 'no-such-account'" in caplog.records[-1].reason

    # A program the account may not reach: pytest's folders are root's alone (0700).
    hidden = tmp_path / "chromium"
    shutil.copy(shutil.which("true"), hidden)
    assert browser_account(ACCOUNT, [str(hidden)]) is None
    assert caplog.records[-1].reason == f"{ACCOUNT!r} cannot run {hidden}"

    assert browser_account("", [chromium]) is None, "an empty BROWSER_USER never switches"
    usable = browser_account(ACCOUNT, [chromium, "Xvfb"])
    assert usable is not None and usable.home.owner() == ACCOUNT
    usable.remove_home()
