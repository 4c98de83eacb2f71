"""Each user's daily budget of transcribed audio: AUDIO_MINUTES_PER_USER_PER_DAY.

Transcription is what a meeting costs, and a recording replayed at 100× costs what 100 times its
length would in real time. So a user's use is counted in seconds of audio transcribed, whatever
the replay speed: each chunk's duration once its transcript is stored (`record`, called by
bot-manager's event handler), per user and UTC day in audio_usage, where deleting a meeting
later takes nothing back. A day is a calendar day in UTC: the budget is whole again at 00:00 UTC.

It is enforced twice. A run request of a user whose audio today has reached the budget is
refused (`check_run`: 429 `audio_budget_exhausted`, Retry-After until 00:00 UTC). And the
reconciler stops the live meetings of such users (`stop_over_budget`), as POST /bot/stop would:
they complete with the reason `audio_budget_exhausted`. Audio already on its way is still
transcribed and kept, so a day's use may end a little above the budget.
"""
from __future__ import annotations

import logging
import math
import uuid
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import and_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from functions.common.errors import LimitReached
from functions.common.lifecycle import LIVE, CompletionReason, MeetingStatus
from functions.common.models import AudioUsage, Meeting
from functions.common.settings import Settings

from .state import ids, lock_meeting, move, settle, utcnow

log = logging.getLogger(__name__)
S = MeetingStatus
EXHAUSTED = CompletionReason.AUDIO_BUDGET_EXHAUSTED
# Live meetings a budget stops; a stopping one is already on its way out.
STOPPABLE = frozenset(LIVE - {S.STOPPING})


def utc_day(at: datetime) -> date:
    """The UTC calendar day `at` falls on: the day whose budget it uses."""
    return at.astimezone(timezone.utc).date()


def next_budget_at(at: datetime) -> datetime:
    """When the budget is whole again after `at`: the next 00:00 UTC."""
    return datetime.combine(utc_day(at) + timedelta(days=1), time(), tzinfo=timezone.utc)


def budget_seconds(settings: Settings) -> float | None:
    """A user's daily budget in seconds of audio; None: no limit."""
    minutes = settings.audio_minutes_per_user_per_day
    return minutes * 60.0 if minutes > 0 else None


def record(db: Session, user_id: str, seconds: float, at: datetime) -> None:
    """Count `seconds` of the user's audio as transcribed at `at` (in the caller's transaction)."""
    if seconds <= 0:
        return
    db.execute(
        insert(AudioUsage)
        .values(user_id=user_id, day=utc_day(at), seconds=seconds)
        .on_conflict_do_update(index_elements=[AudioUsage.user_id, AudioUsage.day], set_={"seconds": AudioUsage.seconds + seconds})
    )


def used_seconds(db: Session, user_id: str, day: date) -> float:
    """Seconds of the user's audio transcribed on the UTC day `day`."""
    return db.scalar(select(AudioUsage.seconds).where(AudioUsage.user_id == user_id, AudioUsage.day == day)) or 0.0


def check_run(db: Session, settings: Settings, user_id: str, now: datetime | None = None) -> None:
    """LimitReached (with retry_after: until 00:00 UTC) if the user's audio today has reached the budget."""
    budget = budget_seconds(settings)
    if budget is None:
        return
    now = now or utcnow()
    used = used_seconds(db, user_id, utc_day(now))
    if used < budget:
        return
    renews = next_budget_at(now)
    raise LimitReached(
        str(EXHAUSTED),
        f"user {user_id!r} has had {_minutes(used)} of audio transcribed today (UTC), its daily budget being "
        f"{_minutes(budget)}; it is whole again at {renews.isoformat()}",
        retry_after=math.ceil((renews - now).total_seconds()),
    )


def over_budget_meetings(db: Session, settings: Settings, now: datetime | None = None) -> list[uuid.UUID]:
    """The live meetings, not yet stopping, of users whose audio today has reached the budget."""
    budget = budget_seconds(settings)
    if budget is None:
        return []
    # From the live meetings (few) to their users' usage today (by its key), never over all usage.
    used_today = and_(AudioUsage.user_id == Meeting.user_id, AudioUsage.day == utc_day(now or utcnow()))
    query = select(Meeting.id).join(AudioUsage, used_today).where(Meeting.status.in_(STOPPABLE), AudioUsage.seconds >= budget)
    return list(db.scalars(query.order_by(Meeting.id)))


def stop_for_budget(db: Session, meeting_pk: uuid.UUID, actor: str) -> bool:
    """Stop the meeting as POST /bot/stop would, with the reason audio_budget_exhausted; False if it is
    no longer live (or already stopping). Its bot is the caller's to stop once this commits."""
    meeting = lock_meeting(db, meeting_pk)
    if meeting is None or meeting.status not in STOPPABLE:
        return False
    move(db, meeting, S.STOPPING, EXHAUSTED, actor)
    settle(db, meeting)  # a bot that has already ended (waiting for its relaunch) sends nothing more
    log.warning("meeting.audio_budget_exhausted", extra=ids(meeting))
    return True


def stop_over_budget(db_sessions: sessionmaker[Session], settings: Settings, actor: str, now: datetime | None = None) -> list[uuid.UUID]:
    """Stop every live meeting of the users over their budget, each in a transaction of its own; the
    meetings stopped, whose bots the caller then stops (the worker's stop_bot task)."""
    with db_sessions() as db:
        candidates = over_budget_meetings(db, settings, now)
    stopped = []
    for meeting_pk in candidates:
        with db_sessions() as db, db.begin():
            if stop_for_budget(db, meeting_pk, actor):
                stopped.append(meeting_pk)
    return stopped


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"
