"""A running stack seen through its public API, as the tests and `make bench` drive it."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import requests
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from functions.common.db import engine_for
from functions.common.lifecycle import LIVE
from functions.common.models import Meeting, WebhookMessage
from functions.common.settings import REPO_ROOT
from functions.webhooks import fanout
from functions.worker.orchestrator import ProcessOrchestrator
from local.stack import Stack

SAMPLE = REPO_ROOT / "local" / "sample" / "meeting.ogg"


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll `check` until it returns something truthy; that value (AssertionError naming `what` on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@dataclass
class RunningStack:
    stack: Stack
    database_url: str
    key_options: dict[str, Any] = field(default_factory=dict)  # what every key it creates gets (a rate limit, say)
    _keys: dict[str, str] = field(default_factory=dict)

    def url(self, service: str) -> str:
        s = self.stack.settings
        port = {"gateway": s.gateway_port, "bot-manager": s.bot_manager_port,
                "transcription": s.transcription_port, "broker": s.broker_port}[service]  # fmt: skip
        return f"http://127.0.0.1:{port}"

    def metrics_url(self, service: str) -> str:
        """Where `service` serves /metrics: the gateway on its metrics port, the others on their own."""
        if service == "gateway":
            return f"http://127.0.0.1:{self.stack.settings.gateway_metrics_port}/metrics"
        return f"{self.url(service)}/metrics"

    def wait_until_quiet(self, timeout: float = 120) -> None:
        """Until no meeting is live, no bot runs and the webhook pump has made and published the
        messages of every meeting's news: before comparing the whole database, say."""

        def quiet() -> bool:
            with Session(engine_for(self.database_url)) as db:
                live = db.scalar(select(func.count()).select_from(Meeting).where(Meeting.status.in_(LIVE)))
                unpublished = db.scalar(select(func.count()).select_from(WebhookMessage).where(WebhookMessage.published_at.is_(None)))
                news = fanout.meetings_with_news(db, limit=1)
            bots = ProcessOrchestrator(str(self.stack.state)).list()
            return live == 0 and not news and unpublished == 0 and not any(bot.state.live for bot in bots)

        wait_for(quiet, timeout, "every meeting of the stack to end and its bots to exit", interval=0.5)

    @property
    def gateway(self) -> str:
        return self.url("gateway")

    @property
    def bots_dir(self) -> Path:
        return self.stack.state / "bots"

    def admin(self, method: str, path: str, **kwargs) -> requests.Response:
        """A call to the gateway's /admin API with the stack's admin token."""
        headers = {"Authorization": f"Bearer {self.stack.admin_token}"}
        return requests.request(method, f"{self.gateway}/admin{path}", headers=headers, timeout=30, **kwargs)

    def api_key(self, user: str) -> str:
        """The user's API key; the user and key are created on first use."""
        if user not in self._keys:
            assert self.admin("POST", "/users", json={"user_id": user}).status_code in (201, 409)
            response = self.admin("POST", f"/users/{user}/keys", json={"name": "tests", **self.key_options})
            assert response.status_code == 201, response.text
            self._keys[user] = response.json()["key"]
        return self._keys[user]

    def api(self, method: str, path: str, user: str, **kwargs) -> requests.Response:
        """A call to the public API with `user`'s API key."""
        headers = {"X-API-Key": self.api_key(user), **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 30)
        return requests.request(method, f"{self.gateway}{path}", headers=headers, **kwargs)

    def run_bot(self, user: str, meeting: str, source: Path | str = SAMPLE, speed: float = 1.0, **fields: Any) -> requests.Response:
        """A file bot replaying `source`; `fields` add to the run request (`recording`, say)."""
        body = {"user_id": user, "meeting_id": meeting, "meeting_title": "test meeting",
                "platform": "file", "meeting_url": str(source), "replay_speed": speed, **fields}  # fmt: skip
        return self.api("POST", "/bot/run", user, json=body)

    def stop_bot(self, user: str, meeting: str) -> requests.Response:
        return self.api("POST", "/bot/stop", user, json={"user_id": user, "meeting_id": meeting})

    def transcript(self, user: str, meeting: str) -> dict:
        response = self.api("GET", f"/transcript/{user}/{meeting}", user)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_status(self, user: str, meeting: str, statuses: set[str], timeout: float) -> dict:
        try:
            return wait_for(
                lambda: (t := self.transcript(user, meeting))["meeting"]["status"] in statuses and t,
                timeout,
                f"meeting {meeting} to reach {statuses}",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {self.transcript(user, meeting)['meeting']}\n{self.story(user, meeting)}") from None

    def story(self, user: str, meeting: str, lines: int = 60) -> str:
        """The last log lines of every service and bot that name the meeting, in time order: what a
        test that waited for the meeting in vain shows of it."""
        try:
            with Session(engine_for(self.database_url)) as db:
                pks = [str(pk) for pk in db.scalars(select(Meeting.id).where(Meeting.user_id == user, Meeting.meeting_id == meeting))]
        except SQLAlchemyError:  # a fault test may have stopped PostgreSQL: the lines naming the meeting id still tell
            pks = []
        names = [f'"{meeting}"', *(f'"{pk}"' for pk in pks)]
        found = []
        for log in [*(self.stack.state / "logs").glob("*.log"), *self.bots_dir.glob("*/bot.log")]:
            found += [line for line in log.read_text(errors="replace").splitlines()
                      if any(name in line for name in names) and "heartbeat" not in line]  # a bot's pulse drowns the story
        found.sort()  # each line starts with its time (functions/common/logs.py)
        return "\n".join(line[:400] for line in found[-lines:])
