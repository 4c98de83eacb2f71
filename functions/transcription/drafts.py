"""Drafts from spare CPU only: a model instance of its own, in a process the kernel runs only
when nothing else on the CPU wants to run (SCHED_IDLE).

A draft must never delay a chunk's final transcript. Threads cannot promise that: a draft's
Python code holding the GIL would stall the final decodes behind it. A separate process can,
and the kernel's idle class is exactly "spare capacity": whatever else is runnable (finals,
other services) goes first. The handler asks for a draft only while no chunk is being
transcribed (a draft beside a chunk's decode would still share caches and memory bandwidth). One draft at a time; a draft that arrives while one is in the works
is dropped, not queued (the next one, a second later, says more anyway), and one the idle
process cannot finish within DRAFT_TIMEOUT_SECONDS is given up (the CPU is busy: that is the
point).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from dataclasses import replace
from multiprocessing.connection import Connection

import numpy as np
from prometheus_client import Counter

from functions.common.settings import Settings

from .engines import TranscribedSegment, load_instance

log = logging.getLogger(__name__)
DRAFTS = Counter("vexa_transcription_drafts_total", "Drafts asked for, by outcome", ["outcome"])
DRAFT_TIMEOUT_SECONDS = 3.0  # a draft older than this would be replaced before it is shown


class DraftWorker:
    """The idle-priority process that transcribes drafts, and the one-at-a-time gate to it."""

    def __init__(self, settings: Settings) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or locks of ours
        self._connection, child_end = context.Pipe()
        self._process = context.Process(target=_serve, args=(child_end, settings), name="transcription-drafts", daemon=True)
        self._process.start()
        child_end.close()
        self._gate = threading.Lock()
        self._unanswered = 0  # drafts given up on whose answers are still to come through the pipe

    def transcribe(self, audio: np.ndarray, language: str, timeout: float = DRAFT_TIMEOUT_SECONDS) -> list[TranscribedSegment] | None:
        """The draft's segments, or None when it is dropped (busy, too slow, or the process is gone)."""
        if not self._gate.acquire(blocking=False):
            DRAFTS.labels("busy").inc()
            return None
        try:
            if not self._caught_up():
                DRAFTS.labels("busy").inc()
                return None
            self._connection.send((audio, language))
            if not self._connection.poll(timeout):
                self._unanswered += 1
                DRAFTS.labels("too_slow").inc()
                return None
            segments = self._connection.recv()
        except (EOFError, OSError) as exc:
            DRAFTS.labels("failed").inc()
            log.error("drafts.process_gone", extra={"error": str(exc)[:200], "exitcode": self._process.exitcode})
            return None
        finally:
            self._gate.release()
        DRAFTS.labels("transcribed").inc()
        return segments

    def _caught_up(self) -> bool:
        """Read (and drop) the answers of drafts given up on; False while one is still being made."""
        while self._unanswered:
            if not self._connection.poll(0):
                return False
            self._connection.recv()
            self._unanswered -= 1
        return True

    def close(self) -> None:
        self._connection.close()
        self._process.join(timeout=5)


def draft_engine_settings(settings: Settings) -> Settings:
    """The drafts' model: the live one over a fitted encoder window (DRAFT_MIN_WINDOW_SECONDS),
    never redone over the whole one. A draft's errors last until its chunk's final text, seconds
    later; its cost decides how many meetings get drafts at all."""
    return replace(settings, whisper_min_window_seconds=settings.draft_min_window_seconds, whisper_window_recheck=0)


def _serve(connection: Connection, settings: Settings) -> None:
    """The draft process: idle priority, one engine instance, one draft at a time until the pipe closes."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux: the lowest priority a process may give itself
        os.nice(19)
    engine = load_instance(draft_engine_settings(settings))
    while True:
        try:
            audio, language = connection.recv()
        except EOFError:  # the service process is gone
            return
        connection.send(engine.transcribe(audio, language))
