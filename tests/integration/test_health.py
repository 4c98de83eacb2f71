"""The health endpoints: /livez, which the cluster's probes ask (helm/vexa/templates/_helpers.tpl),
answers as long as the process does, whatever its dependencies; /healthz, for operators and `make
up`, answers 503 when one is down. So an outage of the database or bot-manager, which every pod
shares, neither restarts the pods nor takes them out of service. transcription keeps a request
thread that never decodes, for them, by one rule in the chart and in `make up`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest
from flask import Flask

from functions.bot_manager import create_app as create_bot_manager
from functions.common.api import LIVEZ
from functions.common.settings import Settings
from functions.gateway import create_app as create_gateway
from functions.transcription import create_app as create_transcription, request_threads
from local.stack import Stack, free_port, isolated_environ
from tests.support.stacks import IN_PROCESS_SECRETS


def settings_with_everything_down(state: Path, **more: str) -> Settings:
    """The services' settings with the database and bot-manager on ports nothing listens on."""
    down = {
        "DATABASE_URL": f"postgresql+pg8000://postgres@127.0.0.1:{free_port()}/vexa",
        "BOT_MANAGER_URL": f"http://127.0.0.1:{free_port()}",
        "STATE_DIR": str(state),
    }
    return Settings.from_env({**os.environ, **IN_PROCESS_SECRETS, **down, **more})


@pytest.mark.parametrize("create_app", [create_gateway, create_bot_manager], ids=["gateway", "bot-manager"])
def test_livez_answers_while_a_dependency_is_down_and_healthz_does_not(
    create_app: Callable[[Settings], Flask], tmp_path: Path
) -> None:
    client = create_app(settings_with_everything_down(tmp_path)).test_client()
    health = client.get("/healthz")
    assert health.status_code == 503 and health.get_json()["status"] == "unavailable"
    live = client.get(LIVEZ.path)
    assert live.status_code == 200 and live.get_json()["status"] == "ok"


def test_transcription_answers_livez(tmp_path: Path) -> None:
    """The third Knative Service, whose probes ask the same (it has no dependency to check)."""
    app = create_transcription(settings_with_everything_down(
        tmp_path, TRANSCRIPTION_ENGINE="faster-whisper", WHISPER_MODEL="", TRANSCRIPTION_DRAFTS="0",
    ))  # fmt: skip
    client = app.test_client()
    assert client.get(LIVEZ.path).get_json() == {"status": "ok", "service": "transcription"}
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("instances, slots, drafts, threads", [("1", "4", "0", 5), ("3", "8", "1", 10), ("4", "2", "0", 5)])
def test_make_up_keeps_a_transcription_thread_for_health_checks_as_the_chart_does(
    instances: str, slots: str, drafts: str, threads: int, tmp_path: Path
) -> None:
    """`make up`'s transcription: a request thread per chunk it takes (TRANSCRIPTION_CHUNK_SLOTS, at
    least one per model), one for drafts where they are on, and one that never decodes, by the rule
    the chart follows (request_threads)."""
    environ = isolated_environ(tmp_path, {**os.environ, "WHISPER_INSTANCES": instances, "TRANSCRIPTION_CHUNK_SLOTS": slots,
                                          "TRANSCRIPTION_DRAFTS": drafts})  # fmt: skip
    (program,) = [p for p in Stack(Settings.from_env(environ), environ).vexa_programs() if p.name == "transcription"]
    command = program.command
    assert int(command[command.index("--threads") + 1]) == threads
    assert threads == request_threads(max(int(instances), int(slots)), drafts == "1")
