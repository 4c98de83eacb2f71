"""A small command-line client of the public API (used by `make run-bot` and `make demo`).

    python -m local.client run --user U --meeting M [--url LINK|RECORDING] [--speed 1.0] [--follow]
    python -m local.client follow --user U --meeting M
    python -m local.client stop --user U --meeting M
    python -m local.client status --user U
    python -m local.client transcript --user U --meeting M [--format txt]

The API key is --api-key or VEXA_API_KEY. Against the embedded stack neither is needed: the
client creates the user and a key through the admin API, with the admin token `make up` wrote
to STATE_DIR/admin-token, and keeps the key in STATE_DIR/keys/<user>.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterator

import requests

from functions.common.lifecycle import TERMINAL
from functions.common.platforms import platform_of_url
from functions.common.settings import REPO_ROOT

SAMPLE = REPO_ROOT / "local" / "sample" / "meeting.ogg"
FINAL_WAIT_SECONDS = 180.0  # a final pass over an hour of audio takes minutes on a CPU: `--final` waits this long


class Client:
    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.http = requests.Session()

    def call(self, method: str, path: str, expect: tuple[int, ...] = (200,), **kwargs) -> requests.Response:
        response = self.http.request(method, self.base_url + path, timeout=30, **kwargs)
        if response.status_code not in expect:
            sys.exit(f"{method} {path} -> {response.status_code}: {response.text.strip()}")
        return response

    def run(self, user: str, meeting: str, url: str, speed: float, title: str | None) -> dict:
        """Send a bot; the platform (a recording, Google Meet, Teams, Zoom) follows from `url`."""
        body = {"user_id": user, "meeting_id": meeting, "meeting_title": title, "meeting_url": url}
        if platform_of_url(url) is None:
            body["replay_speed"] = speed
        return self.call("POST", "/bot/run", expect=(201,), json=body).json()

    def final(self, user: str, meeting: str, timeout: float = FINAL_WAIT_SECONDS) -> str | None:
        """The meeting's final transcript as text once its pass is done; None if none comes in time
        (no recording, FINAL_TRANSCRIPTS=0, or a failed pass: its history says which)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            head = self.call("GET", f"/transcript/{user}/{meeting}").json()
            if head["transcript"] == "final":
                return self.call("GET", f"/transcript/{user}/{meeting}", params={"format": "txt"}).text
            if not head["meeting"]["recording"]:
                return None
            time.sleep(1)
        return None

    def recording(self, user: str, meeting: str, path: Path) -> int:
        """Save the meeting's recording as a WAV file; its size in bytes."""
        with self.http.get(f"{self.base_url}/recording/{user}/{meeting}", stream=True, timeout=30) as response:
            response.raise_for_status()
            with path.open("wb") as out:
                for block in response.iter_content(1 << 16):
                    out.write(block)
        return path.stat().st_size

    def follow(self, user: str, meeting: str, out=sys.stdout) -> dict:
        """Print the meeting as it happens, from its live feed (Server-Sent Events), until it ends;
        the final transcript. A cut connection is resumed from the last cursor: nothing is missed
        and nothing is printed twice."""
        cursor, participants = 0, []
        while True:
            try:
                cursor, ended = self._follow_from(user, meeting, cursor, participants, out)
            except requests.RequestException as exc:
                print(f"-- connection lost ({type(exc).__name__}); resuming from cursor {cursor}", file=sys.stderr, flush=True)
                time.sleep(1)
                continue
            if ended:
                return self.call("GET", f"/transcript/{user}/{meeting}").json()

    def _follow_from(self, user: str, meeting: str, cursor: int, participants: list[str], out) -> tuple[int, bool]:
        """One connection of the stream: (the last cursor seen, whether the meeting ended)."""
        path = f"/transcript/{user}/{meeting}/events"
        with self.http.get(self.base_url + path, headers={"Last-Event-ID": str(cursor)}, stream=True, timeout=(5, 60)) as response:
            if response.status_code == 204:  # it ended, and nothing follows our cursor
                return cursor, True
            if response.status_code != 200:
                sys.exit(f"GET {path} -> {response.status_code}: {response.text.strip()}")
            for kind, data in server_sent_events(response.iter_lines(decode_unicode=True)):
                message = json.loads(data)
                if kind == "resync":  # the feed no longer holds our cursor: print what we missed from the transcript
                    transcript = self.call("GET", f"/transcript/{user}/{meeting}").json()
                    for segment in transcript["segments"]:
                        print(_line(segment), file=out, flush=True)
                    return transcript["cursor"], transcript["meeting"]["status"] in TERMINAL
                cursor = message["cursor"]
                if kind == "status":
                    print(f"-- {message['status']}" + (f" ({message['reason']})" if message["reason"] else ""), file=out, flush=True)
                    if message["status"] in TERMINAL:
                        return cursor, True
                elif kind == "segment":
                    print(_line(message["segment"]), file=out, flush=True)
                elif kind == "speakers" and message["participants"] != participants:
                    participants[:] = message["participants"]
                    print(f"-- participants: {', '.join(participants)}", file=out, flush=True)
        return cursor, False


def _line(segment: dict) -> str:
    speaker = f" {segment['speaker']}:" if segment.get("speaker") else ""
    return f"[{segment['start']:7.2f}s]{speaker} {segment['text']}"


def server_sent_events(lines) -> Iterator[tuple[str, str]]:
    """(event, data) of each event in a text/event-stream; comments (keepalives) are skipped."""
    kind, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield kind, "\n".join(data)
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def local_api_key(client: Client, user: str, state_dir: Path) -> str:
    """The embedded stack's key for `user`, created (with the user) on first use."""
    saved = state_dir / "keys" / user
    if saved.exists():
        return saved.read_text().strip()
    token_file = state_dir / "admin-token"
    if not token_file.exists():
        sys.exit(f"no API key: pass --api-key or set VEXA_API_KEY ({token_file} is missing, so this is not the embedded stack)")
    admin = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
    client.call("POST", "/admin/users", expect=(201, 409), json={"user_id": user}, headers=admin)
    key = client.call("POST", f"/admin/users/{user}/keys", expect=(201,), json={"name": "local client"}, headers=admin).json()["key"]
    saved.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    saved.touch()
    saved.chmod(0o600)
    saved.write_text(key)
    return key


def _recording(url: str) -> str:
    """Make a local path absolute (the API wants absolute paths or URLs); links stay as they are."""
    if "://" in url:
        return url
    return str(Path(url).expanduser().resolve())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m local.client", description="Talk to a running Vexa gateway.")
    parser.add_argument("--gateway", default=os.environ.get("GATEWAY_URL", f"http://127.0.0.1:{os.environ.get('GATEWAY_PORT', '8000')}"))
    parser.add_argument("--api-key", default=os.environ.get("VEXA_API_KEY"), help="the user's API key (X-API-Key)")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="send a bot to a meeting (a recording)")
    stop = commands.add_parser("stop", help="make a meeting's bot leave")
    status = commands.add_parser("status", help="a user's bots")
    transcript = commands.add_parser("transcript", help="a meeting's transcript")
    follow = commands.add_parser("follow", help="print a meeting's transcript live until it ends")
    for command in (run, stop, status, transcript, follow):
        command.add_argument("--user", required=True)
    for command in (run, stop, transcript, follow):
        command.add_argument("--meeting", required=True)
    run.add_argument("--url", default=str(SAMPLE), help="a Google Meet, Teams or Zoom meeting link, or a recording: path or http(s) URL (default: the sample meeting)")
    run.add_argument("--speed", type=float, default=1.0, help="replay speed (1.0 = real time)")
    run.add_argument("--title", default=None)
    run.add_argument("--follow", action="store_true", help="print the transcript live until the meeting ends")
    run.add_argument("--final", action="store_true", help="then wait for the final transcript, print it and save the recording")
    transcript.add_argument("--format", default="txt", choices=["json", "txt", "srt", "vtt"])
    args = parser.parse_args()
    client = Client(args.gateway)
    api_key = args.api_key or local_api_key(client, args.user, Path(os.environ.get("STATE_DIR", ".vexa")))
    client.http.headers["X-API-Key"] = api_key

    if args.command == "run":
        meeting = client.run(args.user, args.meeting, _recording(args.url), args.speed, args.title)
        print(f"bot {meeting['bot_name']} sent to meeting {meeting['meeting_id']} ({meeting['status']})", flush=True)
        if args.follow:
            final = client.follow(args.user, args.meeting)["meeting"]
            print(f"meeting {final['status']}: {final['status_reason']}")
        if args.final:
            show_final(client, args.user, args.meeting)
    elif args.command == "follow":
        final = client.follow(args.user, args.meeting)["meeting"]
        print(f"meeting {final['status']}: {final['status_reason']}")
    elif args.command == "stop":
        print(json.dumps(client.call("POST", "/bot/stop", expect=(202,), json={"user_id": args.user, "meeting_id": args.meeting}).json(), indent=2))
    elif args.command == "status":
        print(json.dumps(client.call("GET", f"/bot/status/{args.user}").json(), indent=2))
    else:
        response = client.call("GET", f"/transcript/{args.user}/{args.meeting}", params={"format": args.format})
        print(json.dumps(response.json(), indent=2) if args.format == "json" else response.text, end="")


def show_final(client: Client, user: str, meeting: str) -> None:
    print("-- waiting for the final transcript (the whole recording in one pass)", flush=True)
    text = client.final(user, meeting)
    if text is None:
        print("-- no final transcript: see the meeting's history (GET /transcript)")
        return
    print(text, end="")
    saved = Path(os.environ.get("STATE_DIR", ".vexa")) / f"{meeting}.wav"
    print(f"-- recording saved to {saved} ({client.recording(user, meeting, saved)} bytes)")


if __name__ == "__main__":
    main()
