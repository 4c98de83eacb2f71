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
in ways a prefix check cannot see. So is a local path with a percent-encoded dot segment or
slash (`%2e%2e`, `.%2E`, `%2f`): a file:// URL's path is decoded once, a plain path not at all,
and a name that reads as `..` or `/` once decoded (again) means one thing to this check and
another to whatever decodes it next. A prefix without a host admits public hosts only, and the
addresses of RECORDING_ALLOWED_NETWORKS.

bot-manager also refuses a local recording that does not exist (`require_local_file`), where it
can tell: inside an allowed folder that exists on its own machine.

bot-manager checks every run request (`functions.common.admission`), and the bot checks again
before it opens anything (`bot/runner.py`), on its own file system. A bot fetches an http(s)
recording itself (bot/sources/download.py) and checks every hop, the URL and each redirect, with
`recording_destination`: the same prefixes, then its host resolved and every address checked,
and the connection made to the checked address (functions/common/outbound.py).
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import SplitResult, unquote, urlsplit
from urllib.request import url2pathname

import urllib3
from urllib3.exceptions import LocationParseError

from .addresses import IpNetwork, internal_host, literal_address, normalise_host, parse_networks
from .logs import redact_url
from .outbound import DEFAULT_PORTS as _DEFAULT_PORTS
from .outbound import Destination, refused_address, resolve

FIELD = "meeting_url"


class RecordingNotAllowed(ValueError):
    """The recording is not inside any allowed source; the message names the field and the sources."""


class NoSuchRecording(ValueError):
    """The local recording is not a file; the message names the field."""


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


@lru_cache(maxsize=16)
def parse_recording_networks(text: str) -> tuple[IpNetwork, ...]:
    """RECORDING_ALLOWED_NETWORKS as networks; ValueError naming the setting and the bad entry."""
    try:
        return parse_networks(text)
    except ValueError as exc:
        raise ValueError(f"RECORDING_ALLOWED_NETWORKS: {exc}") from None


def allowed_recording(meeting_url: str, sources: Sources, networks: tuple[IpNetwork, ...] = ()) -> str:
    """`meeting_url` normalised (a local path becomes its real path), or RecordingNotAllowed.

    The schema (`RunBotRequest`) has already made it an absolute path, file:// or http(s):// URL.
    `networks` (RECORDING_ALLOWED_NETWORKS) admits those internal addresses under a prefix without a host.
    """
    parts = urlsplit(meeting_url)
    scheme = parts.scheme.lower()
    if scheme in _DEFAULT_PORTS:
        _matching_prefix(meeting_url, parts, scheme, sources, networks)
        return meeting_url
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise _refused(meeting_url, "file:// URLs must name this machine", sources)
        if _disguised_separator(parts.path):  # before decoding: `a%2fb` would become two segments
            raise _refused(meeting_url, _DISGUISED, sources)
        # What bot/sources/file.py opens, decoded exactly as it decodes it.
        return _allowed_path(meeting_url, url2pathname(parts.path), sources)
    if scheme == "" and meeting_url.startswith("/"):
        return _allowed_path(meeting_url, meeting_url, sources)
    raise _refused(meeting_url, "it is neither an absolute path nor a file:// or http(s):// URL", sources)


def _allowed_path(meeting_url: str, path: str, sources: Sources) -> str:
    if "\0" in path:
        raise _refused(meeting_url, "it contains a NUL character", sources)
    if ".." in path.split("/"):
        raise _refused(meeting_url, "a path must not contain '..'", sources)
    if _disguised_separator(path):
        raise _refused(meeting_url, _DISGUISED, sources)
    if not path.startswith("/"):
        raise _refused(meeting_url, "a path must be absolute", sources)
    real = os.path.realpath(path)
    if _disguised_separator(real):  # a symbolic link to such a name: the bot, which checks the real path, would refuse it
        raise _refused(meeting_url, _DISGUISED, sources)
    for folder in sources.folders:
        if real == folder or real.startswith(folder.rstrip("/") + "/"):
            return real
    lexical = posixpath.normpath(path)
    if any(lexical.startswith(folder.rstrip("/") + "/") for folder in sources.folders):
        raise _refused(meeting_url, "it leads outside the allowed folders through a symbolic link", sources)
    raise _refused(meeting_url, "it is not inside an allowed folder", sources)


_DISGUISED = "a path must not hide a dot segment or a slash in percent-encoding, such as %2e%2e/ or %2f"
_MAX_DECODINGS = 5  # %252e is %2e is `.`: a few rounds uncover any realistic nesting


def _disguised_separator(path: str) -> bool:
    """Whether a segment of `path` becomes `.`, `..` or holds a slash or backslash once percent-decoded,
    however many times: a `..` or `/` hidden from the checks, which read the path as given."""
    for segment in path.split("/"):
        decoded = segment
        for _ in range(_MAX_DECODINGS):
            if "%" not in decoded:
                break
            decoded = unquote(decoded)
        if decoded != segment and (decoded in (".", "..") or "/" in decoded or "\\" in decoded):
            return True
    return False


def require_local_file(path: str, sources: Sources) -> None:
    """NoSuchRecording unless `path` (a local recording as allowed_recording returned it: its real
    path) is a file, judged where this machine can judge it: inside an allowed folder that exists
    here. An allowed folder missing here is the bot's own (a folder of the bot's image, in a
    cluster): the bot finds out as it opens the file, on its own machine."""
    folder = next((f for f in sources.folders if path == f or path.startswith(f.rstrip("/") + "/")), None)
    if folder is None or not os.path.isdir(folder) or os.path.isfile(path):
        return
    if os.path.isdir(path):
        raise NoSuchRecording(f"{FIELD} {path!r} is a folder, not a recording")
    raise NoSuchRecording(f"{FIELD} {path!r}: no such recording (no file at that path)")


def recording_destination(
    url: str, sources: Sources | None, networks: tuple[IpNetwork, ...], field: str = FIELD
) -> Destination:
    """Where a bot fetches the http(s) recording `url` from, checked now: RecordingNotAllowed saying
    why not (`field` names the URL in it), outbound.Unresolvable if its host does not resolve.

    The URL must match RECORDING_SOURCES as allowed_recording checks it (`sources` None: the bot was
    given none, so only addresses are checked). Its host is resolved and every address must be
    public or in `networks`, unless the prefix it matched names the host: whoever wrote that prefix
    chose that host, wherever it is (a media server inside the cluster).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise _refused(url, "a recording is fetched over http:// or https:// only", sources, field)
    host, port, target = _as_sent(url, parts, scheme, sources, field)
    prefix = _matching_prefix(url, parts, scheme, sources, networks, field) if sources is not None else None
    named = prefix is not None and prefix.host is not None
    addresses = resolve(host, port)
    refused = None if named else refused_address(addresses, networks)
    if refused is not None:
        shown = host if literal_address(host) else f"{host} resolves to {refused}, which"
        why = (
            f"{shown} is not a public address (loopback, private, link-local or reserved); "
            "recordings inside your own network need RECORDING_ALLOWED_NETWORKS"
        )
        raise _refused(url, why, sources, field)
    return Destination(scheme, host, port, target, addresses)


def _as_sent(url: str, parts: SplitResult, scheme: str, sources: Sources | None, field: str) -> tuple[str, int, str]:
    """The normalised host, port and request target of `url` as urllib3, which sends the request,
    reads it; refused when the checks' parser (urlsplit) reads another host or port."""
    try:
        sent = urllib3.util.parse_url(url)
        checked_host, sent_host = normalise_host(parts.hostname or ""), normalise_host(sent.host or "")
        checked_port = parts.port or _DEFAULT_PORTS[scheme]
    except (LocationParseError, ValueError):
        raise _refused(url, "its host or port is invalid", sources, field) from None
    sent_port = sent.port or _DEFAULT_PORTS[scheme]
    if (sent.scheme or "").lower() != scheme or sent_host != checked_host or sent_port != checked_port:
        raise _refused(url, "URL parsers disagree on its host", sources, field)
    return sent_host, sent_port, sent.request_uri


def _matching_prefix(
    meeting_url: str,
    parts: SplitResult,
    scheme: str,
    sources: Sources,
    networks: tuple[IpNetwork, ...],
    field: str = FIELD,
) -> UrlPrefix:
    """The URL prefix `meeting_url` lies under, or RecordingNotAllowed."""
    path = unquote(parts.path)
    if "\\" in path or ".." in path.split("/"):
        raise _refused(meeting_url, "a URL path must not contain '..' or backslashes", sources, field)
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise _refused(meeting_url, "its port is invalid", sources, field) from None
    host = (parts.hostname or "").lower()
    if not host:
        raise _refused(meeting_url, "a URL must name a host", sources, field)
    for prefix in sources.urls:
        if prefix.scheme != scheme:
            continue
        if prefix.host is None:
            if internal_host(host) and not _allowed_literal(host, networks):
                raise _refused(
                    meeting_url,
                    f"{host} is a local or internal host; only a prefix that names it admits it "
                    "(or, for an address, RECORDING_ALLOWED_NETWORKS)",
                    sources,
                    field,
                )
            return prefix
        if prefix.host == host and prefix.port == port and (
            not prefix.path or parts.path == prefix.path or parts.path.startswith(prefix.path + "/")
        ):
            return prefix
    raise _refused(meeting_url, "it does not start with an allowed URL prefix", sources, field)


def _allowed_literal(host: str, networks: tuple[IpNetwork, ...]) -> bool:
    """Whether `host` is an address written out that lies in one of `networks`."""
    try:
        address = literal_address(normalise_host(host))
    except ValueError:
        return False
    return address is not None and any(address in network for network in networks)


def _refused(meeting_url: str, why: str, sources: Sources | None, field: str = FIELD) -> RecordingNotAllowed:
    allowed = f"; allowed (RECORDING_SOURCES): {sources.describe()}" if sources is not None else ""
    return RecordingNotAllowed(
        f"{field} {redact_url(meeting_url)!r} is not an allowed recording source ({why}){allowed}"
    )
