"""Prometheus metrics read from PostgreSQL at scrape time.

Relaunches and failures are decided in the Celery worker, which serves no
/metrics; counting them from the database gives one consistent answer whichever
process acted and survives restarts. The queries use the status and session indexes.
"""
from __future__ import annotations

import logging
import re
from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from functions.common.lifecycle import MeetingStatus
from functions.common.models import BotSession, Meeting

log = logging.getLogger(__name__)
_REASON_CODE = re.compile(r"[a-z_]{1,40}")  # "bot_lost: killed by signal 9" -> bot_lost


def failure_code(reason: str | None) -> str:
    """A failed meeting's reason as a label with few values: its leading code, else `other`."""
    code = (reason or "").split(":", 1)[0].strip()
    return code if _REASON_CODE.fullmatch(code) else "other"


class MeetingMetrics(Collector):
    def __init__(self, db_sessions: sessionmaker[Session]) -> None:
        self.db_sessions = db_sessions

    def collect(self) -> Iterator[Metric]:
        try:
            with self.db_sessions() as db:
                by_status = dict(db.execute(select(Meeting.status, func.count()).group_by(Meeting.status)).all())
                bot_sessions = db.scalar(select(func.count()).select_from(BotSession))
                failures = db.execute(select(Meeting.status_reason).where(Meeting.status == MeetingStatus.FAILED)).scalars()
                by_reason: dict[str, int] = {}
                for reason in failures:
                    by_reason[failure_code(reason)] = by_reason.get(failure_code(reason), 0) + 1
        except SQLAlchemyError as exc:
            log.error("metrics.database_unavailable", extra={"error": str(exc).splitlines()[0]})
            return
        meetings = GaugeMetricFamily("vexa_meetings", "Meetings (one bot each) by status", labels=["status"])
        for status in MeetingStatus:
            meetings.add_metric([str(status)], by_status.get(str(status), 0))
        yield meetings
        relaunches = CounterMetricFamily("vexa_bot_relaunches", "Bots launched to replace a lost or crashed one")
        relaunches.add_metric([], bot_sessions - sum(by_status.values()))
        yield relaunches
        failed = CounterMetricFamily("vexa_meeting_failures", "Failed meetings by reason", labels=["reason"])
        for code, count in sorted(by_reason.items()):
            failed.add_metric([code], count)
        yield failed
