"""`python -m functions.finalizer`: one final pass, as its environment says; exit 0 once stored."""
from __future__ import annotations

import logging
import os
import sys
import uuid

from functions.common.logs import configure_logging
from functions.common.settings import Settings

from functions.meetings.finals import JOB_VARIABLE, MEETING_VARIABLE

from .final_pass import record_failure, run_final_pass

log = logging.getLogger("functions.finalizer")


def main() -> int:
    settings = Settings.from_env()
    configure_logging("final-pass", settings.log_level)
    meeting_pk, job_name = uuid.UUID(os.environ[MEETING_VARIABLE]), os.environ[JOB_VARIABLE]
    try:
        run_final_pass(settings, meeting_pk, job_name)
    except Exception as exc:
        log.exception("final.pass_failed", extra={"meeting_id": str(meeting_pk), "job": job_name})
        record_failure(settings, meeting_pk, job_name, f"{type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
