"""`python -m bot`: run one bot from its environment (see functions/common/bot_config.py)."""
from __future__ import annotations

import signal

# A stop may come while the heavier imports below still load: remember it rather than die of it.
_early_signals: list[int] = []
signal.signal(signal.SIGTERM, lambda signum, _frame: _early_signals.append(signum))

import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from functions.common.bot_config import BotConfig  # noqa: E402
from functions.common.logs import configure_logging  # noqa: E402

from .runner import Bot, install_signal_handlers  # noqa: E402


def main() -> int:
    try:
        config = BotConfig.from_env(os.environ)
    except ValueError as exc:
        configure_logging("bot")
        logging.getLogger("bot").error("bot.misconfigured", extra={"error": str(exc)})
        return 2
    configure_logging(
        "bot", config.log_level, meeting_id=config.meeting_pk, user_id=config.user_id, session_id=config.session_id
    )
    try:
        bot = Bot(config)
    except ValueError as exc:  # settings that contradict each other, e.g. chunk lengths
        logging.getLogger("bot").error("bot.misconfigured", extra={"error": str(exc)})
        return 2
    install_signal_handlers(bot)
    if _early_signals:
        bot.leave(signal.Signals(_early_signals[0]).name)
    return bot.run()


if __name__ == "__main__":
    sys.exit(main())
