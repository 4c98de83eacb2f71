"""Properties that must hold for every input, checked with hypothesis.

- Any user and meeting id the API accepts becomes a bot name that is a valid Kubernetes
  object name (DNS-1123 label) and a path component that stays inside STATE_DIR/bots, label
  values Kubernetes accepts, and the same names every time; distinct ids never share a bot
  name, even ids that read alike once sanitised (the hash part tells them apart).
- The meeting state machine: whatever order events and requests arrive in, a meeting never
  leaves a terminal state, never goes back along the happy path, and moves only along
  TRANSITIONS; `is_stale` agrees with TRANSITIONS.
- RECORDING_SOURCES: whatever path a caller builds (`..`, `.`, symbolic links), an accepted
  recording lies inside an allowed folder.
"""
from __future__ import annotations

import os
import re
import string
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from functions.common.lifecycle import (
    HAPPY_PATH,
    LIVE,
    TERMINAL,
    TRANSITIONS,
    InvalidTransition,
    MeetingStatus,
    can_transition,
    check_transition,
    is_stale,
)
from functions.common.naming import MAX_NAME, bot_name, is_dns_label, label_value
from functions.common.recording_sources import RecordingNotAllowed, allowed_recording, parse_sources
from functions.common.schemas import MeetingId, UserId
from functions.common.settings import Settings
from functions.worker.orchestrator import BotSpec
from functions.worker.orchestrator.job_spec import build_job
from functions.worker.orchestrator.process import ProcessOrchestrator

S = MeetingStatus
DNS_1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
ID_FIRST = string.ascii_letters + string.digits
ID_REST = ID_FIRST + "._@+:-"


def api_ids(max_size: int) -> st.SearchStrategy[str]:
    """Every id the API schemas accept (UserId: 128 characters, MeetingId: 256)."""
    return st.builds(lambda first, rest: first + rest, st.sampled_from(ID_FIRST), st.text(ID_REST, max_size=max_size - 1))


user_ids = api_ids(128)
meeting_ids = api_ids(256)
session_ids = st.uuids().map(lambda u: u.hex)


def lookalike(text: str, data: st.DataObject) -> str:
    """`text` with letters' case flipped and punctuation swapped: an id that sanitises alike."""
    swap = {".": "-", "-": "_", "_": "+", "+": "@", "@": ":", ":": "."}
    return "".join(
        data.draw(st.sampled_from([c, swap.get(c, c.swapcase())])) if i else c  # the first stays alphanumeric
        for i, c in enumerate(text)
    )


# ---- ids that become names, labels and paths ---------------------------------------------------


@given(user_ids, meeting_ids)
def test_the_strategies_make_exactly_what_the_api_accepts(user, meeting):
    assert TypeAdapter(UserId).validate_python(user) == user
    assert TypeAdapter(MeetingId).validate_python(meeting) == meeting


@given(st.text(max_size=300))
def test_what_the_api_refuses_is_refused_for_a_reason(text):
    """The other half of the check above: an id outside the strategies' alphabet is refused."""
    valid = bool(text) and len(text) <= 128 and text[0] in ID_FIRST and all(c in ID_REST for c in text)
    try:
        TypeAdapter(UserId).validate_python(text)
    except ValidationError:
        assert not valid
    else:
        assert valid


@given(user_ids, meeting_ids, session_ids)
@example("A" * 128, "M" * 256, "0" * 32)
@example("a", "-", "s")
@example("x..", "...", "s")
def test_any_accepted_id_gives_a_bot_name_kubernetes_and_the_file_system_take(user, meeting, session):
    name = bot_name(user, meeting, session)
    assert len(name) <= MAX_NAME and DNS_1123_LABEL.fullmatch(name), name
    assert is_dns_label(name)
    assert name == bot_name(user, meeting, session)  # the same bot every time it is looked up
    # A folder under STATE_DIR/bots that cannot climb out or hide.
    root = Path("/srv/state/bots")
    assert Path(os.path.normpath(root / name)).parent == root and name not in (".", "..")


@given(user_ids, meeting_ids, session_ids, st.data())
def test_ids_that_read_alike_never_share_a_bot_name(user, meeting, session, data):
    other_user, other_meeting = lookalike(user, data), lookalike(meeting, data)
    assume((other_user, other_meeting) != (user, meeting))
    assert bot_name(user, meeting, session) != bot_name(other_user, other_meeting, session)


@given(user_ids, meeting_ids, session_ids, session_ids)
def test_every_session_of_a_meeting_gets_its_own_bot(user, meeting, first, second):
    assume(first != second)
    assert bot_name(user, meeting, first) != bot_name(user, meeting, second)


@given(st.one_of(user_ids, meeting_ids, session_ids))
def test_any_id_becomes_a_label_value_kubernetes_takes(text):
    value = label_value(text)
    assert len(value) <= MAX_NAME and LABEL_VALUE.fullmatch(value), value
    assert value == label_value(text)
    if len(text) <= MAX_NAME and LABEL_VALUE.fullmatch(text):
        assert value == text  # readable where it can be: `kubectl get jobs -l vexa.io/user=alice` works


@given(meeting_ids, st.data())
def test_ids_that_read_alike_get_different_label_values(meeting, data):
    other = lookalike(meeting, data)
    assume(other != meeting)
    assert label_value(meeting) != label_value(other)


@settings(max_examples=40, deadline=None)
@given(user_ids, meeting_ids, session_ids)
def test_the_bot_job_carries_only_valid_names_and_labels(user, meeting, session):
    """The Job as the kubernetes orchestrator sends it (job_spec.build_job), for any accepted ids."""
    spec = BotSpec(bot_name(user, meeting, session), {"VEXA_USER_ID": user}, {"user": user, "meeting": meeting, "session": session})
    job = build_job(spec, Settings.from_env({}))
    assert is_dns_label(job["metadata"]["name"])
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        for key, value in labels.items():
            assert LABEL_VALUE.fullmatch(value) and len(value) <= MAX_NAME, (key, value)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(min_size=1, max_size=80))
@example(name="../../etc")
@example(name="..")
@example(name="a/../../b")
def test_the_process_orchestrator_touches_no_path_but_a_bot_name(tmp_path, name):
    """Whatever name reaches it (from the database, say), it stays inside STATE_DIR/bots."""
    orchestrator = ProcessOrchestrator(str(tmp_path / "state"))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    if not is_dns_label(name):
        assert orchestrator.status(name).state == "missing"
        orchestrator.stop(name)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# ---- the meeting state machine ------------------------------------------------------------------


def apply(current: MeetingStatus, target: MeetingStatus) -> MeetingStatus:
    """What bot-manager's `move` does with a request to go to `target`: ignore a stale one,
    make a valid one, refuse (InvalidTransition) any other."""
    if is_stale(current, target):
        return current
    check_transition(current, target)
    return target


@given(st.lists(st.sampled_from(list(MeetingStatus)), max_size=40))
@example([S.COMPLETED, S.ACTIVE, S.FAILED, S.STARTING])
@example([S.STARTING, S.ACTIVE, S.JOINING, S.STOPPING, S.ACTIVE, S.COMPLETED, S.FAILED])
def test_any_order_of_events_moves_a_meeting_only_forward(targets):
    status, seen = S.REQUESTED, [S.REQUESTED]
    for target in targets:
        before = status
        try:
            status = apply(status, target)
        except InvalidTransition:
            assert not can_transition(before, target) and before not in TERMINAL
            status = before
        if status != before:
            assert status in TRANSITIONS[before], (before, status)  # only along the defined transitions
            assert before not in TERMINAL  # a finished meeting never changes again
            if status != S.FAILED:
                assert HAPPY_PATH.index(status) > HAPPY_PATH.index(before)  # never back along the happy path
        seen.append(status)
    for earlier, later in zip(seen, seen[1:]):
        if earlier in TERMINAL:
            assert later == earlier


@given(st.sampled_from(list(MeetingStatus)), st.sampled_from(list(MeetingStatus)))
def test_is_stale_agrees_with_the_transitions(current, target):
    if can_transition(current, target):
        assert not is_stale(current, target)  # a valid step is never dropped as a late event
    if current in TERMINAL or current == target:
        assert is_stale(current, target)  # a repeat, or anything after the end, changes nothing
    if is_stale(current, target) and current in LIVE and target in HAPPY_PATH:
        assert HAPPY_PATH.index(target) <= HAPPY_PATH.index(current)  # stale means already there or past it


def test_the_happy_path_is_a_path_through_every_status_but_failure():
    assert set(HAPPY_PATH) == set(MeetingStatus) - {S.FAILED}
    for earlier, later in zip(HAPPY_PATH, HAPPY_PATH[1:]):
        assert can_transition(earlier, later)
    for status in LIVE:
        assert can_transition(status, S.FAILED)
        # completion is reachable from every live state
        reachable, frontier = {status}, [status]
        while frontier:
            for nxt in TRANSITIONS[frontier.pop()]:
                if nxt not in reachable:
                    reachable.add(nxt)
                    frontier.append(nxt)
        assert S.COMPLETED in reachable
    for status in TERMINAL:
        assert not TRANSITIONS[status]


# ---- recording sources -------------------------------------------------------------------------

SEGMENTS = st.sampled_from(["a", "b", "..", ".", "", "link-out", "link-in", "rec.ogg", "c d", "%2e%2e"])


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """allowed/ (with a link to a file outside it and one inside), and outside/ beside it."""
    root = tmp_path_factory.mktemp("sources")
    allowed, outside = root / "allowed", root / "outside"
    for folder in (allowed / "a" / "b", outside / "a"):
        folder.mkdir(parents=True)
    (outside / "secret.txt").write_text("not a recording")
    (allowed / "a" / "rec.ogg").write_bytes(b"OggS")
    (allowed / "link-out").symlink_to(outside)
    (allowed / "a" / "link-out").symlink_to(outside / "secret.txt")
    (allowed / "link-in").symlink_to(allowed / "a")
    return {"root": root, "allowed": allowed, "outside": outside}


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(SEGMENTS, max_size=6), st.booleans())
def test_an_accepted_path_never_leads_outside_the_allowed_folders(folders, segments, as_url):
    allowed = folders["allowed"]
    path = "/".join([str(allowed), *segments])
    url = f"file://{path}" if as_url else path
    try:
        accepted = allowed_recording(url, parse_sources(f"{allowed}/"))
    except RecordingNotAllowed as refused:
        assert "meeting_url" in str(refused) and str(allowed) in str(refused)
        return
    assert ".." not in segments
    real = os.path.realpath(accepted)
    assert real == accepted and (real + "/").startswith(str(allowed.resolve()) + "/")


@given(st.sampled_from(["https", "http"]), st.text(string.ascii_lowercase + ".@:", min_size=1, max_size=30))
@example("https", "good.example@evil.example")
@example("https", "good.example.evil.example")
@example("https", "evil.example:443@good.example")
def test_an_accepted_url_is_on_the_allowed_host(scheme, authority):
    sources = parse_sources("https://good.example/calls/")
    url = f"{scheme}://{authority}/calls/{uuid.uuid4().hex}.ogg"
    try:
        allowed_recording(url, sources)
    except RecordingNotAllowed:
        return
    from urllib.parse import urlsplit

    assert scheme == "https" and urlsplit(url).hostname == "good.example"
