"""Where a `file` bot may take its recording from: RECORDING_SOURCES, decided in one place.

RECORDING_SOURCES is a comma-separated list of prefixes:

- local folders (`/srv/recordings/`, or `file:///srv/recordings/`): a path is allowed when its
  real path, with every symbolic link resolved, lies inside the real path of one of them;
- URL prefixes (`https://`, `https://media.example.com/calls/`): a URL is allowed when its
  scheme matches and, where the prefix names a host, its host, port and path do too. They are
  compared on the parsed URL, never as text, so `https://good.example@evil.example/` (a user
  name `good.example` on the host `evil.example`) or `https://good.example.evil.example/` do
  not pass for `https://good.example/`.

A path or URL with a `..` segment is refused outright: servers and file systems resolve them
in ways a prefix check cannot see.

bot-manager checks every run request (`functions.common.admission`), and the bot checks again
before it opens anything (`bot/runner.py`), on its own file system.
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from .addresses import internal_host
from .logs import redact_url

FIELD = "meeting_url"
_DEFAULT_PORTS = {"http": 80, "https": 443}


class RecordingNotAllowed(ValueError):
    """The recording is not inside any allowed source; the message names the field and the sources."""


@dataclass(frozen=True)
class UrlPrefix:
    scheme: str
    host: str | None  # None: any host of the scheme
    port: int | None
    path: str  # "" or "/...": the URL's path must be this or lie below it


@dataclass(frozen=True)
class Sources:
    """RECORDING_SOURCES, parsed: resolved local folders and URL prefixes."""

    text: str  # as configured, for messages
    folders: tuple[str, ...]
    urls: tuple[UrlPrefix, ...]

    def describe(self) -> str:
        return ", ".join(part for part in _entries(self.text)) or "(none: RECORDING_SOURCES is empty)"


def _entries(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@lru_cache(maxsize=16)
def parse_sources(text: str) -> Sources:
    """RECORDING_SOURCES as Sources; ValueError naming an entry that is neither a folder nor a URL prefix."""
    folders: list[str] = []
    urls: list[UrlPrefix] = []
    for entry in _entries(text):
        parts = urlsplit(entry)
        scheme = parts.scheme.lower()
        if entry.startswith("/") or scheme == "file":
            path = entry if scheme != "file" else url2pathname(parts.path)
            if not path.startswith("/") or (scheme == "file" and parts.netloc not in ("", "localhost")):
                raise ValueError(f"RECORDING_SOURCES entry {entry!r} is not an absolute folder")
            # Resolved once, so a folder reached through a symbolic link is compared as what it is.
            folders.append(os.path.realpath(path))
        elif scheme in _DEFAULT_PORTS and entry.lower().startswith(f"{scheme}://"):
            if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
                raise ValueError(f"RECORDING_SOURCES entry {entry!r} must be a plain scheme://host/path prefix")
            try:
                port = parts.port
            except ValueError:
                raise ValueError(f"RECORDING_SOURCES entry {entry!r} has an invalid port") from None
            host = parts.hostname or None
            urls.append(UrlPrefix(scheme, host, (port or _DEFAULT_PORTS[scheme]) if host else None, parts.path.rstrip("/")))
        else:
            raise ValueError(
                f"RECORDING_SOURCES entry {entry!r} is neither an absolute folder (/srv/recordings/) "
                "nor an http(s) URL prefix (https://, https://host/path/)"
            )
    return Sources(text, tuple(folders), tuple(urls))


def allowed_recording(meeting_url: str, sources: Sources) -> str:
    """`meeting_url` normalised (a local path becomes its real path), or RecordingNotAllowed.

    The schema (`RunBotRequest`) has already made it an absolute path, file:// or http(s):// URL.
    """
    parts = urlsplit(meeting_url)
    scheme = parts.scheme.lower()
    if scheme in _DEFAULT_PORTS:
        return _allowed_url(meeting_url, parts, scheme, sources)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise _refused(meeting_url, "file:// URLs must name this machine", sources)
        return _allowed_path(meeting_url, url2pathname(parts.path), sources)
    if scheme == "" and meeting_url.startswith("/"):
        return _allowed_path(meeting_url, meeting_url, sources)
    raise _refused(meeting_url, "it is neither an absolute path nor a file:// or http(s):// URL", sources)


def _allowed_path(meeting_url: str, path: str, sources: Sources) -> str:
    if "\0" in path:
        raise _refused(meeting_url, "it contains a NUL character", sources)
    if ".." in path.split("/"):
        raise _refused(meeting_url, "a path must not contain '..'", sources)
    if not path.startswith("/"):
        raise _refused(meeting_url, "a path must be absolute", sources)
    real = os.path.realpath(path)
    for folder in sources.folders:
        if real == folder or real.startswith(folder.rstrip("/") + "/"):
            return real
    lexical = posixpath.normpath(path)
    if any(lexical.startswith(folder.rstrip("/") + "/") for folder in sources.folders):
        raise _refused(meeting_url, "it leads outside the allowed folders through a symbolic link", sources)
    raise _refused(meeting_url, "it is not inside an allowed folder", sources)


def _allowed_url(meeting_url: str, parts, scheme: str, sources: Sources) -> str:
    path = unquote(parts.path)
    if "\\" in path or ".." in path.split("/"):
        raise _refused(meeting_url, "a URL path must not contain '..' or backslashes", sources)
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise _refused(meeting_url, "its port is invalid", sources) from None
    host = (parts.hostname or "").lower()
    if not host:
        raise _refused(meeting_url, "a URL must name a host", sources)
    for prefix in sources.urls:
        if prefix.scheme != scheme:
            continue
        if prefix.host is None:
            if internal_host(host):
                raise _refused(
                    meeting_url,
                    f"{host} is a local or internal host; only a prefix that names it admits it",
                    sources,
                )
            return meeting_url
        if prefix.host == host and prefix.port == port and (
            not prefix.path or parts.path == prefix.path or parts.path.startswith(prefix.path + "/")
        ):
            return meeting_url
    raise _refused(meeting_url, "it does not start with an allowed URL prefix", sources)


def _refused(meeting_url: str, why: str, sources: Sources) -> RecordingNotAllowed:
    return RecordingNotAllowed(
        f"{FIELD} {redact_url(meeting_url)!r} is not an allowed recording source ({why}); "
        f"allowed (RECORDING_SOURCES): {sources.describe()}"
    )
