"""Fixtures every part of the suite shares, and the markers that sort it by folder.

Tests need a PostgreSQL server and a Redis server: TEST_DATABASE_SERVER (default
postgresql+pg8000://postgres@127.0.0.1:5432) and TEST_REDIS_URL (default
redis://127.0.0.1:6379/15, for in-process tests; each stack runs its own Redis). `make test`
(local/testenv.py) starts embedded ones if they do not answer.

Each folder is a marker (pyproject.toml lists them): `pytest -m unit` runs the fast part in
seconds, `pytest -m "not faults and not browser"` leaves out the slowest; `make test` runs all.
"""
from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest
from xdist.scheduler import LoadScopeScheduling

from bot.sources.file import FileSource
from functions.common.settings import REPO_ROOT, Settings
from local.simulators.control import Simulator
from local.stack import ensure_browser_account
from tests.support.bot import launch, sink  # noqa: F401 (fixtures: a bot process, the sink it sends to)
from tests.support.kube import emulator  # noqa: F401 (fixture: the Kubernetes API emulator)
from tests.support.databases import fresh_database
from tests.support.receiver import EventReceiver
from tests.support.stacks import (
    SAMPLE,
    InProcessBotManager,
    RunningStack,
    in_process_bot_manager,
    recorder_trigger,
    running_stack,
)

TESTS = Path(__file__).resolve().parent
MARKERS = {  # folder -> its marker
    "unit": "unit",
    "integration": "integration",
    "api": "integration",
    "live": "integration",
    "recordings": "integration",
    "browser": "browser",
    "faults": "faults",
    "chart": "chart",
    "images": "chart",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # pytest-xdist runs one test per node id: a second test under the same id would silently not run.
    twice = sorted(nodeid for nodeid, count in Counter(item.nodeid for item in items).items() if count > 1)
    if twice:
        raise pytest.UsageError(f"tests sharing a node id (only one of each would run): {twice}")
    for item in items:
        folder = item.path.relative_to(TESTS).parts[0]
        item.add_marker(MARKERS[folder])
        if "stack" in item.fixturenames and folder not in STACK_LANE:
            raise pytest.UsageError(f"{item.nodeid} uses the session stack: it belongs in tests/api/ (STACK_LANE)")


# `make test` runs the suite in two lanes side by side (pytest-xdist, `-n 2`): most of it waits on
# real time (meetings replayed, bots leaving), so two lanes share the two cores. The session
# stack's tests and the browser bots make one lane (one stack, one simulator, never two Chromium
# tests at once), and the held-back recordings' final transcripts (a stack of their own, last in
# that lane) go with them; the fault stack and everything else make the other. Measured on
# clean-clone `make test` runs (`PYTEST_ARGS=--durations=0` gives each lane's sum), the tests took
# 16.2 and 18.1 min in two lanes, 16.7 and 16.2 min in three (the faults apart): no gain beyond the
# runs' own spread, and one of those failed a browser test whose receiver also got another bot's
# whole life (joining, active, left), most likely one of test_orchestrators.py's quiet bots (they
# sent to a free port, which a receiver can be given next; they now go to the discard port). Four
# lanes took 15 min, but every lane ran a third or more slower on the shared CPU, and a browser
# meeting's transcript lost words. With the recordings in the other lane, it summed 1,096 s against
# this lane's 894 s (tests 18.7 min): they were the piece of about the right size to move. Moved,
# the lanes summed 1,141 and 1,142 s in the next run, on a slower hour of the same host (every
# file slower; tests 19.5 min).
STACK_LANE = {"api", "browser", "recordings"}


class Lanes(LoadScopeScheduling):
    def _split_scope(self, nodeid: str) -> str:
        folder = nodeid.split("/")[1]  # tests/<folder>/test_x.py::...
        return "stack and browsers" if folder in STACK_LANE else "faults and the rest"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> Lanes:
    return Lanes(config, log)


# The browsers' lane measures audio played and captured in real time; a browser starved of CPU
# (seen when the other lane's stack starts or transcribes at the same moment) drops some of what the bot
# hears. So the other lane, which only waits longer when it yields, runs at a lower CPU priority,
# and so does every process it starts (its stack, its bots).
REST_LANE_NICENESS = 10


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures start anything
def pytest_runtest_setup(item: pytest.Item) -> None:
    if "PYTEST_XDIST_WORKER" in os.environ and item.path.relative_to(TESTS).parts[0] not in STACK_LANE:
        os.nice(max(0, REST_LANE_NICENESS - os.nice(0)))


@pytest.fixture(scope="session", autouse=True)
def browser_user_account() -> None:
    """Bots started as root run their browsers as BROWSER_USER, which `make up` creates: so does the suite."""
    ensure_browser_account(Settings.from_env().browser_user)


@pytest.fixture()
def bot_manager(tmp_path: Path) -> Iterator[InProcessBotManager]:
    """bot-manager in-process with a database of its own (tests.support.stacks.in_process_bot_manager)."""
    with fresh_database() as database_url:
        yield from in_process_bot_manager(database_url, tmp_path)


@pytest.fixture(scope="session")
def simulator() -> Iterator[Simulator]:
    """The meeting simulators (local/simulators/): the session stack's browser bots join them."""
    sim = Simulator.start()
    yield sim
    sim.stop()


@pytest.fixture(scope="session")
def sample_pcm() -> bytes:
    """The sample meeting as 16 kHz mono s16le PCM, decoded once."""
    with FileSource(str(SAMPLE), 10_000.0) as source:
        return b"".join(source.frames())


@pytest.fixture(scope="session")
def audio_recorder() -> Iterator[EventReceiver]:
    """Every audio chunk RECORDED_USER's bots send through the session stack, as delivered."""
    recorder = EventReceiver()
    recorder.start()
    yield recorder
    recorder.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, simulator: Simulator, audio_recorder: EventReceiver) -> Iterator[RunningStack]:
    """gateway, bot-manager, transcription, broker, Celery: real gunicorn processes under supervisord.

    Its meeting-platform bots reach the simulators instead of the real platforms, and its broker
    routes as knative/ says, plus RECORDED_USER's audio chunks to `audio_recorder`.
    """
    routing = tmp_path_factory.mktemp("knative")
    for path in (REPO_ROOT / "knative").glob("*.yaml"):
        shutil.copy(path, routing)
    (routing / "test-recorder.yaml").write_text(recorder_trigger(audio_recorder.url))
    with fresh_database() as database_url:
        # A join step the simulators answer in a second gets 10 s, not 20: a join that cannot finish fails sooner.
        yield from running_stack(tmp_path_factory.mktemp("stack"), database_url, BOT_BROWSER_HOST_RULES=simulator.host_rules,
                                 KNATIVE_DIR=str(routing), BOT_JOIN_STEP_SECONDS="10")  # fmt: skip
