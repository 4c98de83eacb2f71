"""A small command-line client of the public API (used by `make run-bot` and `make demo`).

    python -m local.client run --user U --meeting M [--url LINK|RECORDING] [--speed 1.0] [--follow]
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

import requests

from functions.common.lifecycle import TERMINAL
from functions.common.platforms import platform_of_url
from functions.common.settings import REPO_ROOT

SAMPLE = REPO_ROOT / "local" / "sample" / "meeting.ogg"


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

    def follow(self, user: str, meeting: str, out=sys.stdout) -> dict:
        """Print segments as they arrive until the meeting ends; the final transcript."""
        shown, status = 0, None
        while True:
            transcript = self.call("GET", f"/transcript/{user}/{meeting}").json()
            if transcript["meeting"]["status"] != status:  # joining, awaiting_admission, active...
                status = transcript["meeting"]["status"]
                print(f"-- {status}", file=out, flush=True)
            for segment in transcript["segments"][shown:]:
                speaker = f" {segment['speaker']}:" if segment.get("speaker") else ""
                print(f"[{segment['start']:7.2f}s]{speaker} {segment['text']}", file=out, flush=True)
            shown = len(transcript["segments"])
            if transcript["meeting"]["status"] in TERMINAL:
                return transcript
            time.sleep(1)


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
    for command in (run, stop, status, transcript):
        command.add_argument("--user", required=True)
    for command in (run, stop, transcript):
        command.add_argument("--meeting", required=True)
    run.add_argument("--url", default=str(SAMPLE), help="a Google Meet, Teams or Zoom meeting link, or a recording: path or http(s) URL (default: the sample meeting)")
    run.add_argument("--speed", type=float, default=1.0, help="replay speed (1.0 = real time)")
    run.add_argument("--title", default=None)
    run.add_argument("--follow", action="store_true", help="print the transcript live until the meeting ends")
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
    elif args.command == "stop":
        print(json.dumps(client.call("POST", "/bot/stop", expect=(202,), json={"user_id": args.user, "meeting_id": args.meeting}).json(), indent=2))
    elif args.command == "status":
        print(json.dumps(client.call("GET", f"/bot/status/{args.user}").json(), indent=2))
    else:
        response = client.call("GET", f"/transcript/{args.user}/{args.meeting}", params={"format": args.format})
        print(json.dumps(response.json(), indent=2) if args.format == "json" else response.text, end="")


if __name__ == "__main__":
    main()
