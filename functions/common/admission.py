"""What a run request must satisfy beyond its schema: checks that depend on the deployment.

`RunBotRequest` checks a request's shape wherever it arrives; this checks it against the
settings: a recording must come from RECORDING_SOURCES (and a local one must exist), the
language must be one the deployed model transcribes, and a bot may stay no longer than
MAX_MEETING_SECONDS. bot-manager applies it to every run request before anything is stored, so
a refused request changes nothing.
"""
from __future__ import annotations

from .errors import Unacceptable
from .languages import describe, supported_languages
from .platforms import Platform
from .recording_sources import (
    NoSuchRecording,
    RecordingNotAllowed,
    allowed_recording,
    parse_recording_networks,
    parse_sources,
    require_local_file,
)
from .schemas import RunBotRequest
from .settings import Settings


def check_run_request(request: RunBotRequest, settings: Settings) -> RunBotRequest:
    """`request` with its meeting_url normalised; Unacceptable naming the field at fault."""
    check_language(request.language, settings)
    check_max_duration(request, settings)
    if request.platform == Platform.FILE and request.meeting_url is not None:
        try:
            sources = parse_sources(settings.recording_sources)
            networks = parse_recording_networks(settings.recording_allowed_networks)
            url = allowed_recording(request.meeting_url, sources, networks)
            if url.startswith("/"):  # a local recording, as its real path (an http(s) one is fetched by the bot only)
                require_local_file(url, sources)
        except RecordingNotAllowed as exc:
            raise Unacceptable("recording_not_allowed", str(exc)) from None
        except NoSuchRecording as exc:
            raise Unacceptable("recording_not_found", str(exc)) from None
        request = request.model_copy(update={"meeting_url": url})
    return request


def check_language(language: str | None, settings: Settings) -> None:
    """Unacceptable unless `language` (DEFAULT_LANGUAGE when None) is one the deployed model transcribes."""
    effective = language or settings.default_language
    supported = supported_languages(settings)
    if effective not in supported:
        given = f"language {effective!r}" if language else f"language (DEFAULT_LANGUAGE {effective!r})"
        model = settings.whisper_model or "the bundled tiny.en"
        raise Unacceptable(
            "language_not_supported",
            f"{given} is not supported by this deployment's model ({model}); it transcribes: {describe(supported)}",
        )


def check_max_duration(request: RunBotRequest, settings: Settings) -> None:
    """Unacceptable if the request asks its bot to stay longer than MAX_MEETING_SECONDS allows."""
    leave = request.automatic_leave
    if leave is not None and leave.max_duration is not None and leave.max_duration > settings.max_meeting_seconds:
        raise Unacceptable(
            "max_duration_too_long",
            f"automatic_leave.max_duration {leave.max_duration} s is longer than this deployment allows "
            f"(MAX_MEETING_SECONDS: {settings.max_meeting_seconds} s)",
        )
