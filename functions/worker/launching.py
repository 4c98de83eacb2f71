"""Launching and stopping a meeting's bot: its spec from the meeting, then the orchestrator's call.

A launch takes two short transactions around the orchestrator call, never one held open across
it: the first decides under the meeting's row lock whether the session is still wanted and
builds its spec, the second records a refusal. The meeting's Redis lock (taken by the caller)
orders launches and stops of one meeting across worker processes.
"""
from __future__ import annotations

import logging
import uuid

from sqlalchemy.orm import Session, sessionmaker

from functions.common.bot_config import BotConfig
from functions.common.events import BotState, Identity
from functions.common.lifecycle import TERMINAL, CompletionReason, MeetingStatus
from functions.common.models import BotSession, Meeting
from functions.common.schemas import AutomaticLeave
from functions.common.settings import Settings
from functions.common.signing import Signer, encode_key, master_key, session_key
from functions.meetings.state import Actor, end_unlaunched, ids, lock_meeting, move, session_of, settle

from .orchestrator import BotSpec, Orchestrator, OrchestratorError

log = logging.getLogger(__name__)
S = MeetingStatus

# A run request's automatic_leave field -> the BotConfig field it sets (the same name, in seconds).
AUTOMATIC_LEAVE_CONFIG = {name: f"{name}_seconds" for name in AutomaticLeave.model_fields}


def bot_options_config(bot_options: dict | None) -> dict[str, str | float]:
    """The BotConfig values a meeting's own bot options set; what they leave out stays the setting's."""
    options = bot_options or {}
    leave = options.get("automatic_leave", {})
    config: dict[str, str | float] = {AUTOMATIC_LEAVE_CONFIG[name]: seconds for name, seconds in leave.items()}
    if "bot_display_name" in options:
        config["display_name"] = options["bot_display_name"]
    return config


def bot_spec(settings: Settings, meeting: Meeting, bot_session: BotSession) -> BotSpec:
    resumed = bot_session.resume_from_s > 0 and meeting.audio_started_at is not None
    identity = Identity(meeting_pk=str(meeting.id), user_id=meeting.user_id, session_id=bot_session.id)
    config = BotConfig.for_meeting(
        settings,
        sink_url=settings.broker_ingress_url,
        meeting_pk=identity.meeting_pk,
        user_id=identity.user_id,
        session_id=identity.session_id,
        session_key=encode_key(session_key(master_key(settings), identity, Signer.BOT)),
        platform=meeting.platform,
        meeting_url=meeting.meeting_url or "",
        language=meeting.language,
        replay_speed=meeting.replay_speed,
        resume_from_seconds=bot_session.resume_from_s if resumed else 0.0,
        audio_origin=meeting.audio_started_at.isoformat() if resumed else "",
        **bot_options_config(meeting.bot_options),
    )
    labels = {"user": meeting.user_id, "meeting": meeting.meeting_id, "session": bot_session.id}
    return BotSpec(
        name=bot_session.bot_name, env=config.to_env(), labels=labels, max_duration_seconds=config.max_duration_seconds
    )


def launch_session(
    db_sessions: sessionmaker[Session], settings: Settings, orchestrator: Orchestrator, meeting_pk: uuid.UUID, session_id: str
) -> bool:
    """Launch a bot session unless it is no longer wanted; True if the orchestrator now runs it.

    Idempotent (orchestrators launch a name once), so a redelivered task is harmless.
    Raises TransientOrchestratorError for the caller to retry; an OrchestratorError fails the meeting.
    """
    with db_sessions() as db, db.begin():
        meeting = lock_meeting(db, meeting_pk)
        bot_session = session_of(meeting, session_id)
        if meeting is None or bot_session is None or bot_session.ended_at is not None or meeting.status in TERMINAL:
            return False
        if meeting.status == S.STOPPING or bot_session is not meeting.sessions[-1]:
            # Stopped (or replaced) before its bot started: nothing to capture, nothing to wait for.
            end_unlaunched(bot_session, CompletionReason.STOPPED)
            settle(db, meeting)
            return False
        spec = bot_spec(settings, meeting, bot_session)
        log_ids = ids(meeting)
    try:
        orchestrator.launch(spec)
    except OrchestratorError as exc:
        fail_launch(db_sessions, meeting_pk, session_id, str(exc))
        return False
    log.info("bot.launched", extra={**log_ids, "bot_name": spec.name, "session_id": session_id})
    return True


def fail_launch(db_sessions: sessionmaker[Session], meeting_pk: uuid.UUID, session_id: str, error: str) -> None:
    """The session's bot could not be launched: it ends, and if it is the meeting's current one, so does the meeting."""
    with db_sessions() as db, db.begin():
        meeting = lock_meeting(db, meeting_pk)
        bot_session = session_of(meeting, session_id)
        if meeting is None or bot_session is None or bot_session.ended_at is not None:
            return
        end_unlaunched(bot_session, f"launch_failed: {error}", BotState.FAILED)
        if bot_session is meeting.sessions[-1] and meeting.status not in TERMINAL:
            move(db, meeting, S.FAILED, f"launch_failed: {error}", Actor.BOT_MANAGER)
            settle(db, meeting)


def stop_session(db_sessions: sessionmaker[Session], orchestrator: Orchestrator, meeting_pk: uuid.UUID) -> None:
    """Ask the meeting's current bot to leave (idempotent); TransientOrchestratorError to retry."""
    with db_sessions() as db:
        meeting = db.get(Meeting, meeting_pk)
        if meeting is None or meeting.bot_name is None:
            return
        name = meeting.bot_name
    orchestrator.stop(name)
    log.info("bot.stop_requested", extra={"meeting_id": str(meeting_pk), "bot_name": name})

