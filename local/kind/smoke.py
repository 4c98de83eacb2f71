"""The smoke test of `make local`: one bot on the sample meeting, through the public gateway.

    python3 local/kind/smoke.py --gateway http://gateway.vexa.127.0.0.1.sslip.io \
        --connect 127.0.0.1:8880 --recording http://vexa-sample.vexa.svc.cluster.local/meeting.ogg \
        --expect local/sample/meeting.txt

It waits for the gateway to answer, creates its user and an API key through the admin API
(the admin token comes from VEXA_ADMIN_TOKEN, never the command line), sends a bot
(POST /bot/run, platform "file"), prints the
segments as they arrive and passes once the meeting is `completed` with a transcript; with
--expect, the transcript must also contain most of the words of that reference text. Exit
status 0 on success, 1 otherwise. Only the standard library: it runs with any python3 >= 3.8,
outside the project's virtual environment.

--connect HOST:PORT sends the requests there, with the gateway URL's host name in the Host
header (Kourier routes on it), so the test needs no DNS.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import time
from urllib.parse import urlsplit

TERMINAL = {"completed", "failed"}


class Gateway:
    def __init__(self, url: str, connect: str | None, timeout: float = 30.0):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SystemExit(f"--gateway must be an http(s) URL, got {url!r}")
        self.https = parts.scheme == "https"
        self.host_header = parts.netloc
        self.prefix = parts.path.rstrip("/")
        if connect:
            host, _, port = connect.rpartition(":")
            if not host or not port.isdigit():
                raise SystemExit(f"--connect must be HOST:PORT, got {connect!r}")
            self.address = (host, int(port))
        else:
            self.address = (parts.hostname, parts.port or (443 if self.https else 80))
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict | None = None, auth: dict[str, str] | None = None) -> tuple[int, dict | str]:
        """(status, parsed JSON body or text); raises OSError when the gateway cannot be reached."""
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        conn = cls(*self.address, timeout=self.timeout)
        try:
            headers = {"Host": self.host_header, "Accept": "application/json", **(auth or {})}
            payload = None
            if body is not None:
                payload = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, self.prefix + path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read().decode("utf-8", "replace")
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw


def wait_ready(gateway: Gateway, deadline: float) -> None:
    """Until GET /healthz answers 200 (the gateway, and bot-manager behind it, may be scaled to zero)."""
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status, body = gateway.call("GET", "/healthz")
            if status == 200:
                return
            last = f"{status} {body}"
        except OSError as exc:
            last = str(exc)
        time.sleep(2)
    raise SystemExit(f"FAIL: the gateway did not become healthy: {last}")


def api_key(gateway: Gateway, user: str, admin_token: str) -> str:
    """A new API key for `user` (created if need be), through the admin API."""
    admin = {"Authorization": f"Bearer {admin_token}"}
    status, body = gateway.call("POST", "/admin/users", {"user_id": user}, admin)
    if status not in (201, 409):
        raise SystemExit(f"FAIL: POST /admin/users -> {status}: {body}")
    status, body = gateway.call("POST", f"/admin/users/{user}/keys", {"name": "make local smoke test"}, admin)
    if status != 201 or not isinstance(body, dict):
        raise SystemExit(f"FAIL: POST /admin/users/{user}/keys -> {status}: {body}")
    return body["key"]


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z']+", text.lower()) if len(w) >= 4}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", required=True, help="the gateway's URL (its Knative Service URL)")
    parser.add_argument("--connect", help="HOST:PORT to send the requests to instead of the URL's host")
    parser.add_argument("--recording", required=True, help="http(s) URL of the recording, as the bot sees it")
    parser.add_argument("--user", default="smoke-test")
    parser.add_argument("--meeting", default=time.strftime("smoke-%Y%m%d-%H%M%S"))
    parser.add_argument("--speed", type=float, default=4.0, help="replay speed (the sample is 63 s long)")
    parser.add_argument("--expect", help="reference transcript: most of its words must be in the result")
    parser.add_argument("--min-overlap", type=float, default=0.5,
                        help="share of the reference's words (4+ letters) the transcript must contain")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole test")
    args = parser.parse_args(argv)
    admin_token = os.environ.get("VEXA_ADMIN_TOKEN")
    if not admin_token:
        raise SystemExit("set VEXA_ADMIN_TOKEN to the chart's admin token (the <release>-admin Secret)")

    deadline = time.monotonic() + args.timeout
    gateway = Gateway(args.gateway, args.connect)
    print(f"gateway {args.gateway}" + (f" via {args.connect}" if args.connect else ""), flush=True)
    wait_ready(gateway, deadline)

    body = {"user_id": args.user, "meeting_id": args.meeting, "meeting_title": "make local smoke test",
            "platform": "file", "meeting_url": args.recording, "replay_speed": args.speed}
    key = {"X-API-Key": api_key(gateway, args.user, admin_token)}
    status, meeting = gateway.call("POST", "/bot/run", body, key)
    if status != 201 or not isinstance(meeting, dict):
        print(f"FAIL: POST /bot/run -> {status}: {meeting}", file=sys.stderr)
        return 1
    print(f"bot {meeting.get('bot_name')} sent to meeting {args.meeting} ({meeting.get('status')})", flush=True)

    shown, transcript = 0, None
    while time.monotonic() < deadline:
        try:
            status, transcript = gateway.call("GET", f"/transcript/{args.user}/{args.meeting}", auth=key)
        except OSError as exc:  # a restarting pod or a cold start: keep polling
            print(f"(gateway: {exc})", flush=True)
            time.sleep(2)
            continue
        if status != 200 or not isinstance(transcript, dict):
            print(f"FAIL: GET /transcript -> {status}: {transcript}", file=sys.stderr)
            return 1
        for segment in transcript["segments"][shown:]:
            print(f"[{segment['start']:7.2f}s] {segment['text']}", flush=True)
        shown = len(transcript["segments"])
        if transcript["meeting"]["status"] in TERMINAL:
            break
        time.sleep(2)
    else:
        state = transcript["meeting"]["status"] if isinstance(transcript, dict) else "unknown"
        print(f"FAIL: the meeting did not end within {args.timeout:.0f} s (status {state})", file=sys.stderr)
        return 1

    final = transcript["meeting"]
    if final["status"] != "completed" or not transcript["segments"]:
        print(f"FAIL: meeting {final['status']} ({final.get('status_reason')}) with "
              f"{len(transcript['segments'])} segments", file=sys.stderr)
        return 1
    if args.expect:
        with open(args.expect, encoding="utf-8") as reference:
            expected = words(reference.read())
        got = words(" ".join(s["text"] for s in transcript["segments"]))
        overlap = len(expected & got) / max(1, len(expected))
        if overlap < args.min_overlap:
            print(f"FAIL: the transcript has {overlap:.0%} of the reference's words "
                  f"(at least {args.min_overlap:.0%} expected)", file=sys.stderr)
            return 1
        print(f"transcript has {overlap:.0%} of the reference's words")
    print(f"PASS: meeting completed ({final.get('status_reason')}) with {len(transcript['segments'])} segments")
    return 0


if __name__ == "__main__":
    sys.exit(main())
