"""`python -m bot`: run one bot from its environment (see functions/common/bot_config.py)."""
from __future__ import annotations

import logging
import os
import sys

from functions.common.bot_config import BotConfig
from functions.common.logs import configure_logging

from .runner import Bot, install_signal_handlers


def main() -> int:
    try:
        config = BotConfig.from_env(os.environ)
    except ValueError as exc:
        configure_logging("bot")
        logging.getLogger("bot").error("bot.misconfigured", extra={"error": str(exc)})
        return 2
    configure_logging(
        "bot", config.log_level, meeting_id=config.meeting_id, user_id=config.user_id, session_id=config.session_id
    )
    bot = Bot(config)
    install_signal_handlers(bot)
    return bot.run()


if __name__ == "__main__":
    sys.exit(main())
