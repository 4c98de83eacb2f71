"""How meetings and transcripts look in API responses."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row

from functions.common.models import Meeting


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def meeting_json(meeting: Meeting, with_history: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(meeting.id),
        "user_id": meeting.user_id,
        "meeting_id": meeting.meeting_id,
        "meeting_title": meeting.title,
        "platform": meeting.platform,
        "meeting_url": meeting.meeting_url,
        "language": meeting.language,
        "replay_speed": meeting.replay_speed,
        # As the run request gave it; null: the BOT_DISPLAY_NAME setting.
        "bot_display_name": (meeting.bot_options or {}).get("bot_display_name"),
        "status": meeting.status,
        "status_reason": meeting.status_reason,
        "bot_name": meeting.bot_name,
        "session_id": meeting.sessions[-1].id if meeting.sessions else None,
        "relaunches": max(0, len(meeting.sessions) - 1),
        "created_at": _iso(meeting.created_at),
        "updated_at": _iso(meeting.updated_at),
        "started_at": _iso(meeting.started_at),
        "ended_at": _iso(meeting.ended_at),
        "participants": meeting.participants or [],
    }
    if with_history:
        body["history"] = [
            {"from": change.from_status, "to": change.to_status, "reason": change.reason, "actor": change.actor, "at": _iso(change.at)}
            for change in meeting.history
        ]
        body["sessions"] = [
            {
                "session_id": s.id,
                "bot_name": s.bot_name,
                "launched_at": _iso(s.launched_at),
                "resume_from": round(s.resume_from_s, 3),
                "ended_at": _iso(s.ended_at),
                "end_state": s.end_state,
                "end_reason": s.end_reason,
                "chunks_sent": s.chunks_sent,
                "chunks_dropped": s.chunks_dropped,
                "has_screenshot": s.has_screenshot,
            }
            for s in meeting.sessions
        ]
    return body


def segment_json(segment: Row, speaker: str | None) -> dict[str, Any]:
    """`segment`: a row of meetings.SEGMENT_FIELDS; `speaker`: who said it, if known."""
    return {
        "start": round(segment.start_s, 3),
        "end": round(segment.end_s, 3),
        "start_at": _iso(segment.start_at),
        "end_at": _iso(segment.end_at),
        "text": segment.text,
        "language": segment.language,
        "session_id": segment.session_id,
        "speaker": speaker,
    }
