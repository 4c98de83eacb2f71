"""The headers the gateway adds for browsers and for the caches between them and it."""
from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache

from flask import Response

# The inline <script> and <style> of a page of ours: each element's text, exactly as served.
_INLINE = {tag: re.compile(rf"<{tag}>(.*?)</{tag}>", re.DOTALL) for tag in ("script", "style")}


def add_security_headers(response: Response) -> Response:
    """Every answer: its type is what Content-Type says, and nothing on the way keeps a copy.

    nosniff: no browser reads a transcript or an error as HTML or script. no-store: answers are
    users' meetings and transcripts, fetched with their key; no shared proxy or browser disk
    cache may keep one. A view that says otherwise (the SSE stream, the live page) keeps its own.
    """
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


@lru_cache(maxsize=2)
def page_headers(html: str) -> dict[str, str]:
    """The headers of a self-contained page of ours (the live page, which holds an API key in its tab).

    Its Content-Security-Policy runs only its own inline script and style (by their hashes), lets
    it talk to this gateway only, and lets no other site frame it (clickjacking); no Referer
    tells other sites its URL.
    """
    sources = {tag: " ".join(f"'sha256-{_digest(text)}'" for text in pattern.findall(html)) or "'none'"
               for tag, pattern in _INLINE.items()}  # fmt: skip
    policy = (
        f"default-src 'none'; script-src {sources['script']}; style-src {sources['style']}; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
        "Referrer-Policy": "no-referrer",
        # The page carries no user's data (the key is typed in), so it may be kept, but checked each
        # time: a new version is seen at once.
        "Cache-Control": "no-cache",
    }


def _digest(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
