"""A stop (SIGTERM) reaches the bot whatever its main thread was doing when the signal landed."""
from __future__ import annotations

import logging
import os
import signal
import sys

import pytest

from bot.runner import Bot, install_signal_handlers
from functions.common.logs import configure_logging
from tests.support.bot import bot_config


class MidWrite:
    """stderr as a signal handler finds it when the signal lands while the main thread is writing
    to it: CPython refuses the handler's write ("reentrant call")."""

    def write(self, _text: str) -> int:
        raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stderr>'>")

    def flush(self) -> None:
        pass


@pytest.fixture()
def restore_process():
    """The signal handlers and root logger as they were: the test installs the bot's."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    root = logging.getLogger()
    log_handlers, level = root.handlers[:], root.level
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    root.handlers[:] = log_handlers
    root.setLevel(level)


def test_a_sigterm_landing_mid_log_line_still_makes_the_bot_leave(restore_process, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stderr", MidWrite())
    configure_logging("bot")  # as `python -m bot` does: JSON lines on (this) stderr
    bot = Bot(bot_config("http://127.0.0.1:9/"))
    install_signal_handlers(bot)
    os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before kill returns to this thread
    monkeypatch.undo()
    assert bot.stop_requested() and bot.leave_reason == "SIGTERM"
