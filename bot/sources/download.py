"""An http(s) recording, fetched by the bot itself and handed to FFmpeg as a file it cannot leave.

FFmpeg's own HTTP client would follow redirects, and a playlist's entries (HLS), to hosts nobody
checked, so FFmpeg is never given a URL. Each hop, the URL and every redirect after it (at most
MAX_REDIRECTS), is checked by functions/common/recording_sources.py's `recording_destination`:
RECORDING_SOURCES, then its host resolved now and every address checked. The request goes to the
checked address (functions/common/outbound.py, as webhooks do), and a refused hop ends the bot
with the reason.

The body is kept in a temporary file in the bot's scratch space (TMPDIR) only as far as FFmpeg
has read it: a replay starts at once, and FFmpeg can still seek back, or ahead (an MP4 whose
index comes last), as it did over HTTP ranges.
"""
from __future__ import annotations

import base64
import os
import tempfile
from urllib.parse import unquote, urldefrag, urljoin

import urllib3
from urllib3.exceptions import HTTPError

from functions.common.addresses import IpNetwork
from functions.common.logs import redact_url
from functions.common.outbound import Destination, Unresolvable, pinned_pool
from functions.common.recording_sources import FIELD, RecordingNotAllowed, Sources, recording_destination

from .base import SourceError

MAX_REDIRECTS = 5
MAX_BYTES = 4 * 1024**3  # the temporary file lives in the bot's scratch space: a larger body is refused
READ_BYTES = 64 * 1024
USER_AGENT = "Vexa-Bot/1"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# What seek() answers FFmpeg, as FFmpeg's own negative error codes (AVERROR(e) is -e on Linux).
_UNKNOWN_SIZE = -38  # AVERROR(ENOSYS): the body's length is not known (yet)
_BAD_SEEK = -22  # AVERROR(EINVAL)


def open_download(url: str, sources: Sources | None, networks: tuple[IpNetwork, ...], timeout: float) -> Download:
    """The recording at `url`, its redirects followed hop by hop, each one checked; SourceError
    saying why not (retryable when the network failed, not when a hop was refused)."""
    shown = redact_url(url)
    current = url
    for hop in range(MAX_REDIRECTS + 1):
        destination = _checked(current, sources, networks, shown, hop)
        pool = pinned_pool(destination, urllib3.Timeout(connect=timeout, read=timeout))
        try:
            response = pool.urlopen(
                "GET", destination.target, headers=_headers(destination, current), redirect=False,
                retries=False, preload_content=False,
            )  # fmt: skip
        except HTTPError as exc:
            pool.close()
            reason = getattr(exc, "reason", None) or exc
            message = f"cannot open recording {shown}: no answer from {destination.host}: {reason}"
            raise SourceError(message, retryable=True) from None  # the network may do better next time
        if response.status == 200:
            return Download(response, pool, shown)
        response.close()  # a redirect's or an error's body is not read
        pool.close()
        if response.status not in _REDIRECTS:
            retryable = response.status >= 500 or response.status in (408, 429)
            raise SourceError(f"cannot open recording {shown}: {destination.host} answered {response.status}",
                              retryable=retryable)  # fmt: skip
        location = response.headers.get("Location")
        if not location:
            raise SourceError(f"cannot open recording {shown}: {destination.host} redirected without a Location")
        current = urldefrag(urljoin(current, location)).url
    raise SourceError(f"cannot open recording {shown}: more than {MAX_REDIRECTS} redirects")


def _checked(url: str, sources: Sources | None, networks: tuple[IpNetwork, ...], shown: str, hop: int) -> Destination:
    try:
        return recording_destination(url, sources, networks, FIELD if hop == 0 else "the redirect to")
    except RecordingNotAllowed as exc:  # a new bot would be refused too
        raise SourceError(str(exc) if hop == 0 else f"cannot open recording {shown}: {exc}") from None
    except Unresolvable as exc:  # DNS may answer next time
        raise SourceError(f"cannot open recording {shown}: {exc}", retryable=True) from None


def _headers(destination: Destination, url: str) -> dict[str, str]:
    headers = {"Host": destination.host_header(), "User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    auth = urllib3.util.parse_url(url).auth  # user:password in this hop's own URL, as FFmpeg sent it
    if auth:
        user, _, password = auth.partition(":")
        credentials = f"{unquote(user)}:{unquote(password)}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
    return headers


class Download:
    """A checked response's body as a read-only, seekable file for PyAV (av.open takes any object
    with read, seek and tell). seek() answers FFmpeg's way: the new position, or a negative
    FFmpeg error code, never an exception (PyAV would re-raise it at the next FFmpeg call)."""

    def __init__(self, response: urllib3.BaseHTTPResponse, pool: urllib3.HTTPConnectionPool, shown: str,
                 limit: int | None = None) -> None:  # fmt: skip
        self._response = response
        self._pool = pool
        self._shown = shown
        self._limit = MAX_BYTES if limit is None else limit
        self._spool = tempfile.TemporaryFile(prefix="vexa-recording-")  # deleted when closed
        self._spooled = 0  # bytes of the body in the spool
        self._position = 0  # where FFmpeg reads next
        self._complete = False
        self._length = _content_length(response)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def read(self, size: int = -1) -> bytes:
        self._spool_until(None if size < 0 else self._position + size)
        available = self._spooled - self._position
        if available <= 0:
            return b""
        self._spool.seek(self._position)
        data = self._spool.read(available if size < 0 else min(size, available))
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            target = offset
        elif whence == os.SEEK_CUR:
            target = self._position + offset
        elif whence == os.SEEK_END:
            size = self._spooled if self._complete else self._length
            if size is None:
                return _UNKNOWN_SIZE  # FFmpeg then goes without the size rather than wait for the whole body
            target = size + offset
        else:
            return _BAD_SEEK
        if target < 0:
            return _BAD_SEEK
        self._position = target
        return target

    def close(self) -> None:
        self._response.close()
        self._pool.close()
        self._spool.close()

    def _spool_until(self, end: int | None) -> None:
        """Read the body into the spool up to byte `end` (None: to its end), or as far as it goes."""
        while not self._complete and (end is None or self._spooled < end):
            try:
                data = self._response.read(READ_BYTES)
            except (HTTPError, OSError) as exc:
                raise SourceError(f"cannot read recording {self._shown}: {exc}", retryable=True) from None
            if not data:
                self._complete = True
                return
            if self._spooled + len(data) > self._limit:
                raise SourceError(f"cannot read recording {self._shown}: it is larger than {self._limit} bytes")
            self._spool.seek(self._spooled)
            self._spool.write(data)
            self._spooled += len(data)


def _content_length(response: urllib3.BaseHTTPResponse) -> int | None:
    """The body's length in bytes, if the response says it and sends the body as is."""
    if response.headers.get("Content-Encoding", "identity").lower() != "identity":
        return None
    try:
        length = int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None
    return length if length >= 0 else None
