"""The client side of the WhisperLive benchmark peer: streams sent as its own client sends them.

Protocol facts this relies on (whisper_live 0.10.0, server.py, backend/base.py, client.py):

- the client's first message is a JSON options object; the server answers
  {"uid", "message": "SERVER_READY", "backend"} or a {"uid", "status": "WAIT"|"ERROR", ...};
- audio is binary float32 16 kHz mono frames; the bytes b"END_OF_AUDIO" end the stream, after
  which the server closes the socket without transcribing what is still buffered;
- every transcript message is {"uid", "segments": [...]}: the last `send_last_n_segments`
  completed segments (resent each time, never changed once completed) plus at most one
  trailing partial segment (completed=False) whose text may still change. start/end are
  strings of seconds since the stream's first sample;
- the trailing segment becomes completed only when whisper puts another segment after it or
  its text repeats more than `same_output_threshold` times. When whisper rates the last
  segment of a decode as probably not speech (no_speech_prob > no_speech_thresh), that decode
  completes nothing and sends no partial, so the words after the last completed segment can
  stay pending until more audio changes the decode. Its own client therefore waits, after
  the last frame, until the last segment's text has not changed for 15 s, then sends END_OF_AUDIO, and writes the completed segments plus the last trailing
  partial it saw. We do the same, so the WER is that of the transcript its client writes.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import websockets
from websockets.sync.client import connect as connect_sync

from functions.common.events import SAMPLE_RATE

from .resources import ResourceMeter

# Its client's defaults (whisper_live.client.Client and TranscriptionTeeClient).
FRAME_SAMPLES = 4096
SEND_LAST_N_SEGMENTS = 10
SAME_OUTPUT_THRESHOLD = 10
NO_SPEECH_THRESH = 0.45
SETTLE_S = 15.0  # Client.disconnect_if_no_response_for
END_OF_AUDIO = b"END_OF_AUDIO"

READY_TIMEOUT_S = 60.0
CLOSE_TIMEOUT_S = 10.0
WARM_UP_S = 5.0
WARM_UP_DECODES = 3


def warm_up(port: int, speech: np.ndarray) -> None:
    """One throwaway session, so that no measured run pays for the server's cold start.

    The server loads its model when the first client connects, and its first decodes run
    several times slower than later ones; a long-running server has paid for both.
    """
    with connect_sync(f"ws://127.0.0.1:{port}", compression=None) as ws:
        ws.send(json.dumps(_options(str(uuid.uuid4()), "en")))
        _recv_until_sync(ws, lambda body: body.get("message") == "SERVER_READY")
        for begin in range(0, len(speech), FRAME_SAMPLES):
            ws.send(speech[begin : begin + FRAME_SAMPLES].astype(np.float32).tobytes())
        for _ in range(WARM_UP_DECODES):
            _recv_until_sync(ws, lambda body: "segments" in body)
        ws.send(END_OF_AUDIO)


def _recv_until_sync(ws, wanted) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        body = json.loads(ws.recv(timeout=max(0.0, deadline - time.monotonic())))
        if body.get("status") in ("WAIT", "ERROR"):
            raise RuntimeError(f"WhisperLive server refused the warm-up session: {body}")
        if wanted(body):
            return


def _options(uid: str, language: str) -> dict:
    """The options message its client sends on open, with the client's defaults."""
    return {
        "uid": uid,
        "language": language,
        "task": "transcribe",
        "model": "tiny.en",  # replaced by the server with its custom model path
        "use_vad": True,
        "send_last_n_segments": SEND_LAST_N_SEGMENTS,
        "no_speech_thresh": NO_SPEECH_THRESH,
        "clip_audio": False,
        "same_output_threshold": SAME_OUTPUT_THRESHOLD,
        "enable_translation": False,
        "target_language": "fr",
        "hotwords": None,
        "enable_diarization": False,
        "max_speakers": 10,
        "known_speakers": [],
        "word_timestamps": False,
        "initial_prompt": None,
        "vad_parameters": None,
    }


# ---------------------------------------------------------------- streams


@dataclass
class StreamResult:
    uid: str
    text: str = ""
    completed_segments: int = 0
    latencies_s: list[float] = field(default_factory=list)  # per completed segment
    first_seen_latencies_s: list[float] = field(default_factory=list)  # per completed segment
    messages: int = 0
    error: str | None = None


@dataclass
class PeerRun:
    n: int
    audio_s: float
    speed: float
    wall_s: float
    server_cpu_s: float
    server_peak_rss_mib: float
    load_avg_1min: float  # the machine's load when the run began: the peer takes what CPU it gets
    streams: list[StreamResult]


@dataclass
class _Received:
    at: float
    body: dict


def stream_meetings(port: int, audio: np.ndarray, n: int, language: str = "en", speed: float = 1.0,
                    *, server_pid: int, stagger_s: float = 0.0) -> PeerRun:  # fmt: skip
    """Stream `audio` as `n` concurrent meetings to the server, the i-th starting i × `stagger_s`
    seconds after the first; what each stream received."""
    audio = np.asarray(audio, dtype=np.float32)
    load_avg_1min = os.getloadavg()[0]
    started = time.time()
    with ResourceMeter(lambda: {"server": server_pid}) as meter:
        streams = asyncio.run(_all_streams(port, audio, n, language, speed, stagger_s))
    return PeerRun(
        n=n,
        audio_s=len(audio) / SAMPLE_RATE,
        speed=speed,
        wall_s=time.time() - started,
        server_cpu_s=meter.cpu_seconds("server"),
        server_peak_rss_mib=meter.peak_rss_mib("server"),
        load_avg_1min=load_avg_1min,
        streams=streams,
    )


async def _all_streams(port: int, audio: np.ndarray, n: int, language: str, speed: float, stagger_s: float) -> list[StreamResult]:
    # The deadline bounds a server that falls ever further behind.
    deadline = time.time() + n * stagger_s + 3 * len(audio) / SAMPLE_RATE / speed + 4 * SETTLE_S + READY_TIMEOUT_S
    streams = (_one_stream(port, audio, language, speed, deadline, i * stagger_s) for i in range(n))
    return list(await asyncio.gather(*streams))


async def _one_stream(port: int, audio: np.ndarray, language: str, speed: float, deadline: float, delay: float) -> StreamResult:
    result = StreamResult(uid=str(uuid.uuid4()))
    received: list[_Received] = []
    t0 = None
    await asyncio.sleep(delay)
    try:
        # compression=None: its client (websocket-client) does not negotiate permessage-deflate.
        async with websockets.connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None) as ws:
            await ws.send(json.dumps(_options(result.uid, language)))
            await _wait_ready(ws)
            t0 = time.time()
            reader = asyncio.create_task(_read_all(ws, received))
            await _send_paced(ws, audio, t0, speed, reader)
            await _settle(received, reader, deadline)
            if not reader.done():
                await ws.send(END_OF_AUDIO)
                await asyncio.wait_for(reader, timeout=CLOSE_TIMEOUT_S)
            result.error = reader.result()
    except (OSError, TimeoutError, websockets.exceptions.WebSocketException, RuntimeError) as error:
        result.error = f"{type(error).__name__}: {error}"
    if t0 is not None:
        _summarize(result, received, t0, speed)
    return result


async def _wait_ready(ws) -> None:
    async with asyncio.timeout(READY_TIMEOUT_S):
        while True:
            body = json.loads(await ws.recv())
            if body.get("message") == "SERVER_READY":
                return
            if body.get("status") in ("WAIT", "ERROR"):
                raise RuntimeError(f"server refused the stream: {body}")


async def _read_all(ws, received: list[_Received]) -> str | None:
    """Record every message until the socket closes; why the stream failed, or None."""
    try:
        async for raw in ws:
            body = json.loads(raw)
            received.append(_Received(at=time.time(), body=body))
            if body.get("message") == "DISCONNECT":  # max_connection_time reached
                return "server disconnected the stream"
            if body.get("status") == "ERROR":
                return f"server error: {body.get('message')}"
    except websockets.exceptions.ConnectionClosedError as error:
        return f"connection closed: {error}"
    return None


async def _send_paced(ws, audio: np.ndarray, t0: float, speed: float, reader: asyncio.Task) -> None:
    """Send frames as a live source would: each once its last sample has been spoken."""
    for begin in range(0, len(audio), FRAME_SAMPLES):
        if reader.done():  # the server went away
            return
        frame = audio[begin : begin + FRAME_SAMPLES]
        due = t0 + (begin + len(frame)) / SAMPLE_RATE / speed
        await asyncio.sleep(max(0.0, due - time.time()))
        await ws.send(frame.tobytes())


async def _settle(received: list[_Received], reader: asyncio.Task, deadline: float) -> None:
    """Wait, as its client does, until the last segment's text has not changed for SETTLE_S."""
    last_text, changed_at, seen = None, time.time(), 0
    while not reader.done() and time.time() < deadline:
        for message in received[seen:]:
            segments = message.body.get("segments")
            if segments and segments[-1]["text"] != last_text:
                last_text, changed_at = segments[-1]["text"], message.at
        seen = len(received)
        if time.time() - changed_at >= SETTLE_S:
            return
        await asyncio.sleep(0.2)


def _summarize(result: StreamResult, received: list[_Received], t0: float, speed: float) -> None:
    """Fill the stream's transcript and latencies, reading the messages as its client does.

    Client.process_segments keeps a completed segment when it starts at or after the end of
    the last one kept (resent segments are skipped), and remembers the last trailing partial;
    Client.write_srt_file appends that partial when its text differs from the last completed.
    """
    result.messages = len(received)
    transcript: list[tuple[dict, float]] = []  # completed segment, when it first arrived
    last_partial = None
    for message in received:
        segments = message.body.get("segments") or []
        for segment in segments:
            follows = not transcript or float(segment["start"]) >= float(transcript[-1][0]["end"])
            if segment.get("completed") and follows:
                transcript.append((segment, message.at))
        if segments and not segments[-1].get("completed"):
            last_partial = segments[-1]
    texts = [segment["text"] for segment, _ in transcript]
    if last_partial is not None and (not texts or texts[-1] != last_partial["text"]):
        texts.append(last_partial["text"])
    result.text = " ".join(text.strip() for text in texts)
    result.completed_segments = len(transcript)
    for segment, at in transcript:
        start, end = float(segment["start"]), float(segment["end"])
        spoken = t0 + end / speed
        result.latencies_s.append(at - spoken)
        result.first_seen_latencies_s.append(_first_seen(received, start, end) - spoken)


def _first_seen(received: list[_Received], start: float, end: float) -> float:
    """When a segment overlapping [start, end] in audio time first reached the client."""
    for message in received:
        for segment in message.body.get("segments") or ():
            if float(segment["start"]) < end and float(segment["end"]) > start:
                return message.at
    raise ValueError(f"no message overlaps {start}-{end}")  # the completed segment itself does
