"""A `file` bot's http(s) recording is fetched by the bot, hop by hop, never by FFmpeg (issue 17 §4).

A recording server on 127.0.0.1 (admitted by RECORDING_ALLOWED_NETWORKS) redirects, or serves an
HLS playlist, towards a canary on 127.0.0.2, which nothing admits. FFmpeg used to follow both on
its own; now every redirect is checked like the URL itself (RECORDING_SOURCES, then every address
its host resolves to), playlists are refused, and the canary must never see a request.
"""
from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np
import pytest

from bot.sources import SourceError
from bot.sources.download import MAX_REDIRECTS
from bot.sources.file import FileSource
from functions.common.addresses import parse_networks
from functions.common.events import BotState, EventType
from functions.common.recording_sources import parse_sources
from tests.support.bot import bot_config
from tests.support.receiver import EventReceiver
from tests.support.stacks import SAMPLE

ORIGIN_HOST = "127.0.0.1"
CANARY_HOST = "127.0.0.2"  # loopback too, but outside RECORDING_ALLOWED_NETWORKS
ALLOWED = "127.0.0.1/32"
FAST = 10_000.0
HLS = "application/vnd.apple.mpegurl"


@dataclass
class Server:
    """A small HTTP server on `host`: `routes` maps a path to (status, headers, body)."""

    host: str
    routes: dict[str, Callable[[], tuple[int, dict[str, str], bytes]]] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)  # every path requested, in order
    fallback: Callable[[], tuple[int, dict[str, str], bytes]] | None = None

    def start(self) -> Server:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.hits.append(self.path)
                route = server.routes.get(self.path.split("?")[0], server.fallback)
                status, headers, body = route() if route else (404, {}, b"not here")
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    if value:  # "": not sent (HTTP/1.0: the body ends where the connection does)
                        self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._http = ThreadingHTTPServer((self.host, 0), Handler)
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._http.server_address[1]}"

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()


def redirect(to: str, status: int = 302) -> Callable[[], tuple[int, dict[str, str], bytes]]:
    return lambda: (status, {"Location": to}, b"")


def serve(body: bytes, content_type: str = "audio/ogg") -> Callable[[], tuple[int, dict[str, str], bytes]]:
    return lambda: (200, {"Content-Type": content_type}, body)


def playlist(*segments: str) -> bytes:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:70", "#EXT-X-MEDIA-SEQUENCE:0"]
    for segment in segments:
        lines += ["#EXTINF:63.0,", segment]
    return ("\n".join([*lines, "#EXT-X-ENDLIST"]) + "\n").encode()


@pytest.fixture
def canary() -> Iterator[Server]:
    """Answers anything with the sample, so whatever reached it would play: it must see no request."""
    server = Server(CANARY_HOST, fallback=serve(SAMPLE.read_bytes())).start()
    yield server
    server.stop()


@pytest.fixture
def origin(canary: Server) -> Iterator[Server]:
    server = Server(ORIGIN_HOST).start()
    sample = SAMPLE.read_bytes()
    server.routes.update({
        "/meeting.ogg": serve(sample),
        "/moved.ogg": redirect("/meeting.ogg", 301),
        "/moved-twice.ogg": redirect(f"{server.url}/moved.ogg", 307),
        "/to-canary.ogg": redirect(f"{canary.url}/stolen.ogg"),
        "/to-canary-later.ogg": redirect("/to-canary.ogg", 308),
        "/standup.m3u8": serve(playlist(f"{canary.url}/segment0.ts", f"{canary.url}/segment1.ts"), HLS),
        "/calls/standup.ogg": serve(sample),
        "/calls/moved.ogg": redirect("/private/standup.ogg"),
        "/private/standup.ogg": serve(sample),
    })  # fmt: skip
    for n in range(MAX_REDIRECTS + 2):  # /loop0 -> /loop1 -> ...
        server.routes[f"/loop{n}"] = redirect(f"/loop{n + 1}")
    server.routes[f"/loop{MAX_REDIRECTS + 2}"] = serve(sample)
    yield server
    server.stop()


def read_all(url: str, sources: str | None = "http://", networks: str = ALLOWED) -> bytes:
    source = FileSource(url, FAST, parse_sources(sources) if sources is not None else None, parse_networks(networks))
    with source:
        return b"".join(source.frames())


# ---- the bot, as it runs: refused hops end it with the reason, and nothing reaches the canary ----


def test_a_bot_refuses_a_redirect_to_an_unchecked_host_and_never_fetches_it(
    sink: EventReceiver, launch, origin: Server, canary: Server
) -> None:
    config = bot_config(sink.url, meeting_url=f"{origin.url}/to-canary.ogg", recording_sources="http://",
                        recording_allowed_networks=ALLOWED)  # fmt: skip
    bot = launch(config)
    assert bot.exit_code() == 1, bot.output()
    assert canary.hits == []
    assert origin.hits == ["/to-canary.ogg"]
    assert sink.states() == [BotState.JOINING, BotState.FAILED]
    failed = sink.final_status()
    assert f"the redirect to '{canary.url}/stolen.ogg' is not an allowed recording source" in failed.reason
    assert f"{CANARY_HOST} is a local or internal host" in failed.reason
    assert "RECORDING_ALLOWED_NETWORKS" in failed.reason  # what would admit it
    assert failed.retryable is False  # a new bot would be refused too
    assert not sink.of_type(EventType.AUDIO_CHUNK)


def test_a_bot_never_follows_an_hls_playlist(sink: EventReceiver, launch, origin: Server, canary: Server) -> None:
    config = bot_config(sink.url, meeting_url=f"{origin.url}/standup.m3u8", recording_sources="http://",
                        recording_allowed_networks=ALLOWED)  # fmt: skip
    bot = launch(config)
    assert bot.exit_code() == 1, bot.output()
    assert canary.hits == []
    assert origin.hits == ["/standup.m3u8"]
    failed = sink.final_status()
    assert failed.state == BotState.FAILED
    assert f"cannot open recording {origin.url}/standup.m3u8: not an audio file" in failed.reason
    assert failed.retryable is False
    assert not sink.of_type(EventType.AUDIO_CHUNK)


def test_a_bot_plays_a_recording_through_redirects_that_stay_allowed(
    sink: EventReceiver, launch, origin: Server, canary: Server
) -> None:
    config = bot_config(sink.url, meeting_url=f"{origin.url}/moved-twice.ogg", recording_sources="http://",
                        recording_allowed_networks=ALLOWED)  # fmt: skip
    bot = launch(config)
    assert bot.exit_code() == 0, bot.output()
    assert sink.final_status().state == BotState.LEFT and sink.of_type(EventType.AUDIO_CHUNK)
    assert origin.hits == ["/moved-twice.ogg", "/moved.ogg", "/meeting.ogg"]
    assert canary.hits == []


# ---- the rules, hop by hop (FileSource, in this process) ----------------------------------------


def test_every_hop_is_checked_against_the_same_rules(origin: Server, canary: Server, sample_pcm: bytes) -> None:
    assert read_all(f"{origin.url}/moved.ogg") == sample_pcm
    with pytest.raises(SourceError, match=rf"the redirect to '{canary.url}/stolen.ogg' is not an allowed") as refused:
        read_all(f"{origin.url}/to-canary-later.ogg")  # allowed first hop, allowed second, refused third
    assert not refused.value.retryable
    # A prefix naming the host admits it whatever its address, but only below its path, for every hop.
    named = f"{origin.url}/calls/"
    assert read_all(f"{origin.url}/calls/standup.ogg", sources=named, networks="") == sample_pcm
    with pytest.raises(SourceError, match="the redirect to .*/private/standup.ogg' .* allowed URL prefix"):
        read_all(f"{origin.url}/calls/moved.ogg", sources=named, networks="")
    assert canary.hits == []
    assert "/private/standup.ogg" not in origin.hits


def test_a_bot_without_recording_sources_still_checks_addresses(origin: Server) -> None:
    with pytest.raises(SourceError, match=f"{ORIGIN_HOST} is not a public address"):
        read_all(f"{origin.url}/meeting.ogg", sources=None, networks="")
    assert origin.hits == []


def test_redirects_are_limited(origin: Server, sample_pcm: bytes) -> None:
    assert read_all(f"{origin.url}/loop2") == sample_pcm  # MAX_REDIRECTS redirects to the recording
    with pytest.raises(SourceError, match=f"more than {MAX_REDIRECTS} redirects"):
        read_all(f"{origin.url}/loop0")
    assert len(origin.hits) == 1 + MAX_REDIRECTS + 1 + MAX_REDIRECTS  # the first read's, then the refused one's


def test_a_local_playlist_cannot_reach_files_outside_the_allowed_folder(tmp_path: Path) -> None:
    """FFmpeg opened a local HLS playlist's entries itself, wherever they were."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    shutil.copy(SAMPLE, outside / "private.ogg")
    (allowed / "standup.m3u8").write_bytes(playlist((outside / "private.ogg").as_uri()))
    (allowed / "relative.m3u8").write_bytes(playlist("../outside/private.ogg"))
    for name in ("standup.m3u8", "relative.m3u8"):
        with pytest.raises(SourceError, match="not an audio file the bot replays"):
            read_all(str(allowed / name), sources=f"{allowed}/")


# ---- what FFmpeg did over HTTP still works on what the bot fetched ----------------------------------


def test_an_mp4_with_its_index_at_the_end_plays(origin: Server, tmp_path: Path) -> None:
    """FFmpeg seeks to the end for the index (moov) and back: the download keeps what it read."""
    path = tmp_path / "standup.m4a"
    write_m4a(path, seconds=3.0)
    assert path.read_bytes().rfind(b"moov") > path.read_bytes().find(b"mdat")  # the index comes last
    origin.routes["/standup.m4a"] = serve(path.read_bytes(), "audio/mp4")
    unsized = {"Content-Type": "audio/mp4", "Content-Length": ""}
    origin.routes["/unsized.m4a"] = lambda: (200, unsized, path.read_bytes())
    local = read_all(str(path), sources=None)
    assert len(local) / 32_000 == pytest.approx(3.0, abs=0.05)
    assert read_all(f"{origin.url}/standup.m4a") == local
    assert read_all(f"{origin.url}/unsized.m4a") == local  # no Content-Length: no size for FFmpeg, still plays


def test_a_relaunched_bot_resumes_a_downloaded_recording(origin: Server, sample_pcm: bytes) -> None:
    source = FileSource(f"{origin.url}/meeting.ogg", FAST, parse_sources("http://"), parse_networks(ALLOWED))
    assert source.skip(10.0)
    with source:
        assert b"".join(source.frames()) == sample_pcm[10 * 32_000 :]


def test_download_failures_say_whether_a_new_bot_may_do_better(origin: Server, monkeypatch) -> None:
    origin.routes["/busy.ogg"] = lambda: (503, {}, b"try later")
    with pytest.raises(SourceError, match=f"{ORIGIN_HOST} answered 503") as busy:
        read_all(f"{origin.url}/busy.ogg")
    assert busy.value.retryable
    with pytest.raises(SourceError, match=f"{ORIGIN_HOST} answered 404") as missing:
        read_all(f"{origin.url}/absent.ogg")
    assert not missing.value.retryable
    monkeypatch.setattr("bot.sources.download.MAX_BYTES", 100_000)  # the sample is about 210 KB
    with pytest.raises(SourceError, match="larger than 100000 bytes") as large:
        read_all(f"{origin.url}/meeting.ogg")
    assert not large.value.retryable


def write_m4a(path: Path, seconds: float) -> None:
    """An AAC tone in MP4, as PyAV's muxer writes it: the index (moov) after the audio."""
    rate = 48_000
    tone = (np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate) * 0.3).astype(np.float32)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate)
        for start in range(0, len(tone), 1024):
            frame = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="flt", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for resampled in resampler.resample(frame):
                container.mux(stream.encode(resampled))
        container.mux(stream.encode(None))
