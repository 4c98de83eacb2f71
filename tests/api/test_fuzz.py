"""OpenAPI-driven fuzzing of the real gateway (schemathesis), in three passes over the `stack`
fixture's gateway:

(a) every public operation with a valid API key of a user of its own, whose bot limit is 2, so
    fuzzed runs cannot flood the machine with bots;
(b) every operation with bad credentials: no key, a made-up key, a revoked key, and the other
    kind of credential (the admin token for the public API, a user's key for /admin). Every
    request the router can place must be answered 401;
(c) the /admin operations with the admin token.

Every response must be free of 5xx, have a status code, content type and body that the document
describes, and refuse what the document says is invalid (negative_data_rejection).

The operations are generated from the document the gateway serves at /openapi.json: the module
builds the same document in-process at import (pytest collects one test per operation), and
`world` checks that the gateway serves exactly it. (schemathesis' lazy loader,
`schemathesis.pytest.from_fixture`, fails on pytest 9.2: it uses `Function._nodeid`, which
pytest 9.2 no longer has.)

Generated ids are aimed where the test can tell right from wrong (`_aim`, a before_call hook, so
schemathesis re-checks which cases are still invalid): a valid user_id becomes the key's own user,
another user or stays as generated; a valid meeting_id may name a finished meeting with a
transcript; a run request may name a one-second silent recording (inside RECORDING_SOURCES), so
bots really start (201) and the limit answers (429). The data is the same on every run:
`derandomize` and a fixed seed, no example database. The module prints the run's size.
"""
from __future__ import annotations

import json
import subprocess
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote

import numpy as np
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from pydantic import ValidationError
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from functions.common.events import SAMPLE_RATE, encode_wav
from functions.common.schemas import MeetingId, UserId
from functions.common.web import type_adapter
from functions.gateway.openapi import openapi_document
from local.audio import load_pcm_f32
from tests.support.stacks import SAMPLE, RunningStack

MAX_EXAMPLES = 50  # generated cases per operation in (a) and (c), besides schemathesis' coverage cases
BAD_CREDENTIAL_EXAMPLES = 10  # per operation and kind of credential in (b): refused before the body matters
SEED = 5  # with derandomize: the same requests on every run
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),  # explicit: the coverage cases; no shrinking, a failure shows as found
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)
BAD_CREDENTIAL_SETTINGS = settings(FUZZ_SETTINGS, max_examples=BAD_CREDENTIAL_EXAMPLES)
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        # Positive and negative data; no credentials from the document: each pass sends its own.
        "generation": {"mode": "all", "with-security-parameters": False, "deterministic": True, "database": "none"},
        "phases": {"examples": {"enabled": False}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True},
                   "stateful": {"enabled": False}},  # fmt: skip
    }
)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]  # fmt: skip

# What the gateway serves at /openapi.json, less its address; `world` checks that it is exactly that.
SCHEMA = schemathesis.openapi.from_dict(openapi_document("http://gateway.invalid"), config=CONFIG)

USER, OTHER = "fuzz-user", "fuzz-other"  # the key's user and someone else
ADMIN_TARGET = "fuzz-admin-target"  # what /admin calls change: this user, and users they make up
BOT_LIMIT = 2


# -- what the run did ---------------------------------------------------------------------------
@dataclass
class Tally:
    runs: set[tuple[str, str, str]] = field(default_factory=set)  # (pass, credential, operation)
    requests: Counter = field(default_factory=Counter)  # pass -> requests
    phases: Counter = field(default_factory=Counter)  # "coverage" / "fuzzing" -> requests
    classes: Counter = field(default_factory=lambda: Counter({"2xx": 0, "4xx": 0, "5xx": 0}))  # -> responses

    def record(self, name: str, credential: str, case: schemathesis.Case, response: schemathesis.Response) -> None:
        self.runs.add((name, credential, case.operation.label))
        self.requests[name] += 1
        self.phases[case.meta.phase.name.value if case.meta else "other"] += 1
        self.classes[f"{response.status_code // 100}xx"] += 1

    def summary(self) -> str:
        """e.g. fuzz: 12 operations in 56 runs (valid key 6, bad credentials 44, admin token 6) x up to
        50 generated examples (10 with bad credentials) + 1779 coverage cases = 2770 requests; ..."""
        operations = {operation for _, _, operation in self.runs}
        runs = Counter(name for name, _, _ in self.runs)
        per_pass = ", ".join(f"{name} {runs[name]}" for name in self.requests)  # in the order the passes ran
        classes = ", ".join(f"{n} {cls}" for cls, n in sorted(self.classes.items()))
        return (f"fuzz: {len(operations)} operations in {len(self.runs)} runs ({per_pass}) x up to {MAX_EXAMPLES} "
                f"generated examples ({BAD_CREDENTIAL_EXAMPLES} with bad credentials) + {self.phases['coverage']} "
                f"coverage cases = {sum(self.requests.values())} requests; responses: {classes}")  # fmt: skip


TALLY = Tally()


@pytest.fixture(scope="module", autouse=True)
def _print_summary(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n{TALLY.summary()}")


# -- the world the fuzzer acts in ---------------------------------------------------------------
@dataclass
class World:
    stack: RunningStack
    key: str  # USER's
    revoked_key: str  # USER's, revoked
    done_meeting: str  # USER's, completed, with segments
    spare_meeting: str  # USER's, completed, for DELETE
    silence: Path  # one second, inside RECORDING_SOURCES
    admin_keys: list[str]  # ids of ADMIN_TARGET's keys
    session: requests.Session = field(default_factory=requests.Session)


WORLD: World | None = None  # for the before_call hook


def _speech(directory: Path, seconds: float = 8.0) -> Path:
    pcm = load_pcm_f32(SAMPLE)[: int(SAMPLE_RATE * seconds)]
    path = directory / "speech.wav"
    path.write_bytes(encode_wav((pcm * 32767).astype("<i2").tobytes()))
    return path


@pytest.fixture(scope="module")
def world(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    global WORLD
    served = requests.get(f"{stack.gateway}/openapi.json", timeout=30).json()
    # PUBLIC_URL is unset: the document names the server relative to itself, `/`.
    assert served == json.loads(json.dumps(openapi_document("/"))), "the fuzzer must test the served document"

    folder = tmp_path_factory.mktemp("fuzz")
    silence = folder / "silence.wav"
    silence.write_bytes(encode_wav(np.zeros(SAMPLE_RATE, dtype="<i2").tobytes()))
    key = stack.api_key(USER)
    stack.api_key(OTHER)
    response = stack.admin("PATCH", f"/users/{USER}", json={"max_bots": BOT_LIMIT})
    assert response.status_code == 200, response.text
    revoked = stack.admin("POST", f"/users/{USER}/keys", json={"name": "revoked"}).json()
    assert stack.admin("DELETE", f"/keys/{revoked['id']}").status_code == 200
    stack.api_key(ADMIN_TARGET)
    admin_keys = [k["id"] for k in stack.admin("GET", f"/users/{ADMIN_TARGET}/keys").json()["keys"]]
    done, spare = "fuzz-done", "fuzz-spare"
    assert stack.run_bot(USER, done, source=_speech(folder), speed=4.0).status_code == 201
    assert stack.run_bot(USER, spare, source=silence, speed=50.0).status_code == 201
    finished = stack.wait_status(USER, done, {"completed", "failed"}, timeout=120)
    assert finished["meeting"]["status"] == "completed" and finished["segments"], finished
    stack.wait_status(USER, spare, {"completed"}, timeout=60)

    WORLD = World(stack, key, revoked["key"], done, spare, silence, admin_keys)
    schemathesis.hook(before_call)
    try:
        yield WORLD
    finally:
        schemathesis.hooks.unregister(before_call)
        WORLD = None
        for bot in stack.api("GET", f"/bot/status/{USER}", USER).json()["bots"]:  # the fuzzer's bots leave
            if bot["status"] not in ("completed", "failed"):
                stack.stop_bot(USER, bot["meeting_id"])


# -- aiming generated ids -----------------------------------------------------------------------
def _pick(value: Any, *choices: Any) -> Any:
    """One of `choices` (None: the generated value itself), always the same one for the same value."""
    choice = choices[zlib.crc32(repr(value).encode()) % len(choices)]
    return value if choice is None else choice


def _valid(kind: Any, value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        type_adapter(kind).validate_python(value)
    except ValidationError:
        return False
    return True


def _aim(case: schemathesis.Case, world: World) -> None:
    """Point valid generated ids at users, meetings and keys the test knows; invalid ones stay."""
    if case.operation.path.startswith("/admin"):
        # An id with an encoded slash, which the WSGI server decodes before routing: no route may take it.
        users: tuple = (ADMIN_TARGET, ADMIN_TARGET, f"{ADMIN_TARGET}%2Fkeys", None)
    else:
        users = (USER, USER, OTHER, None)
    if case.operation.path == "/bot/run":
        meetings: tuple = (None,)  # a new run of a meeting would replace the transcript that GET reads
    elif case.operation.method.upper() == "DELETE":
        meetings = (world.spare_meeting, None)
    else:
        meetings = (world.done_meeting, None)
    params = case.path_parameters  # as sent: percent-encoded
    if params:
        if _valid(UserId, unquote(params.get("user_id", ""))):
            params["user_id"] = _pick(params["user_id"], *users)
        if _valid(MeetingId, unquote(params.get("meeting_id", ""))):
            params["meeting_id"] = _pick(params["meeting_id"], *meetings)
        if "key_id" in params:
            params["key_id"] = _pick(params["key_id"], None, *world.admin_keys)
    body = case.body
    if isinstance(body, dict):
        if _valid(UserId, body.get("user_id")):
            body["user_id"] = _pick(body["user_id"], *users)
        if _valid(MeetingId, body.get("meeting_id")):
            body["meeting_id"] = _pick(body["meeting_id"], *meetings)
        if case.operation.path == "/bot/run" and _pick(body.get("meeting_url"), True, False):
            # A bot that really starts, and leaves at once (unless something else in the body is wrong).
            body.update(meeting_url=str(world.silence), replay_speed=50.0)
            body.pop("language", None)


def before_call(context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]) -> None:
    if WORLD is not None:
        _aim(case, WORLD)


def _call(
    case: schemathesis.Case, world: World, name: str, credentials: dict[str, str], credential: str = ""
) -> schemathesis.Response:
    case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() not in ("x-api-key", "authorization")}
    response = case.call(base_url=world.stack.gateway, session=world.session, headers=credentials, timeout=30)
    TALLY.record(name, credential, case, response)
    case.validate_response(response, checks=CHECKS, headers=credentials)
    return response


# -- (a) a valid key ----------------------------------------------------------------------------
# Each pass is parametrized by its kind of credential, (a) and (c) with one each: pytest 9.2 builds a
# schemathesis item's node id without its operation unless the test has parameters of its own, and
# pytest-xdist (`make test`) runs only one of the items that share a node id.
@pytest.mark.parametrize("kind", ["valid key"])
@FUZZ_SETTINGS
@SCHEMA.exclude(path_regex="^/admin").parametrize()
def test_public_api_with_a_valid_key(case: schemathesis.Case, world: World, kind: str) -> None:
    _call(case, world, kind, {"X-API-Key": world.key})


# -- (b) bad credentials ------------------------------------------------------------------------
MADE_UP_KEY = "vx_" + "A" * 43


def _bad_credentials(kind: str, world: World, admin: bool) -> dict[str, str]:
    if kind == "none":
        return {}
    if kind in ("made-up", "revoked"):
        value = MADE_UP_KEY if kind == "made-up" else world.revoked_key
        return {"Authorization": f"Bearer {value}"} if admin else {"X-API-Key": value}
    assert kind == "other kind"  # a user's key for /admin, the admin token for the public API
    if admin:
        return {"Authorization": f"Bearer {world.key}", "X-API-Key": world.key}
    return {"Authorization": f"Bearer {world.stack.stack.admin_token}"}


def _routable(case: schemathesis.Case) -> bool:
    """Whether the router can place the request on its operation: 404 for a path parameter with a
    slash in it, 405 for a probe with a method the path does not have."""
    if case.method.upper() != case.operation.method.upper():
        return False
    return not any("/" in unquote(str(value)) for value in (case.path_parameters or {}).values())


@pytest.mark.parametrize("kind", ["none", "made-up", "revoked", "other kind"])
@BAD_CREDENTIAL_SETTINGS
# Not /healthz, /livez and /live (anyone may read them), nor /ws: a WebSocket's credentials are
# checked after the upgrade, which plain HTTP never reaches (tests/live/test_streams.py checks its 4401).
@SCHEMA.exclude(path_regex="^/(healthz|livez|live|ws)$").parametrize()
def test_every_operation_refuses_bad_credentials(case: schemathesis.Case, world: World, kind: str) -> None:
    credentials = _bad_credentials(kind, world, admin=case.operation.path.startswith("/admin"))
    response = _call(case, world, "bad credentials", credentials, kind)
    if _routable(case):
        assert response.status_code == 401, f"{case.method} {case.formatted_path} with {kind} credentials: {response.text}"


# -- (c) the admin API --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["admin token"])
@FUZZ_SETTINGS
@SCHEMA.include(path_regex="^/admin").parametrize()
def test_admin_api_with_the_admin_token(case: schemathesis.Case, world: World, kind: str) -> None:
    _call(case, world, kind, {"Authorization": f"Bearer {world.stack.stack.admin_token}"})


# -- (d) the schemathesis command line, as a user would point it at the served document ------------
def test_the_schemathesis_cli_runs_against_the_served_document(world: World, tmp_path: Path) -> None:
    """The CLI loads /openapi.json from the gateway (it crashed on the hand-written document) and finds
    nothing wrong with the read operations: no 5xx, and every status, content type and body as documented."""
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "run", f"{world.stack.gateway}/openapi.json",
        "--header", f"X-API-Key: {world.key}", "--include-method", "GET",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "--max-examples", "10", "--seed", str(SEED), "--generation-deterministic", "--phases", "coverage,fuzzing",
        "--no-color", "--report-dir", str(tmp_path),
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "operations" in run.stdout.lower(), run.stdout[-2000:]
