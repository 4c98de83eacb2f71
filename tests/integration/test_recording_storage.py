"""The recording storages (functions/recordings/storage.py): the same tests against each backend.

`folder` in a temporary folder; `s3` against a real S3 HTTP endpoint, moto's standalone server
in a process of its own, spoken to by boto3 as a deployment would.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import boto3
from botocore.awsrequest import AWSResponse
import numpy as np
import pytest
import requests

from functions.common.events import encode_wav
from functions.common.settings import Settings
from functions.recordings.assembly import StoredChunk, Timeline, chunk_start, read_wav, wav_size
from functions.recordings.storage import (
    FolderStorage,
    RecordingMissing,
    RecordingStorage,
    S3Storage,
    chunk_key,
    meeting_prefix,
    storage_from_settings,
    validate_key,
)
from local.stack import free_port

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}  # moto takes any


def moto_command(port: int) -> list[str]:
    script = Path(sys.executable).parent / "moto_server"
    prefix = [str(script)] if script.exists() else [sys.executable, "-m", "moto.server"]
    return [*prefix, "-H", "127.0.0.1", "-p", str(port)]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server, started once for this module, stopped after it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(moto_command(port), stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(f"moto_server exited with {server.returncode}: {log.read_text()[-2000:]}")
            try:
                requests.get(url, timeout=1)
                break
            except requests.RequestException:  # not listening yet, or listening but not answering yet (a busy CPU)
                if time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not answer on {url} in 60 s: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **CREDENTIALS)


def new_bucket(endpoint: str) -> str:
    bucket = f"recordings-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(params=["folder", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> RecordingStorage:
    """Each backend, empty: a fresh folder, or a fresh bucket on the module's S3 server."""
    if request.param == "folder":
        return FolderStorage(tmp_path / "recordings")
    endpoint = request.getfixturevalue("s3_endpoint")
    return S3Storage(new_bucket(endpoint), "recordings/", s3_client(endpoint))


def test_put_then_get_gives_the_bytes_back(storage: RecordingStorage) -> None:
    key = chunk_key("alice@example.com", "m1", "s1", 0)
    data = bytes(range(256)) * 40
    storage.put(key, data)
    assert storage.get(key) == data


def test_a_second_put_replaces_the_first(storage: RecordingStorage) -> None:
    key = chunk_key("alice", "m1", "s1", 3)
    storage.put(key, b"first, and longer than the second")
    storage.put(key, b"second")
    assert storage.get(key) == b"second"


def test_getting_a_missing_key_raises_recording_missing(storage: RecordingStorage) -> None:
    storage.put(chunk_key("alice", "m1", "s1", 0), b"x")
    with pytest.raises(RecordingMissing):
        storage.get(chunk_key("alice", "m1", "s1", 1))
    with pytest.raises(RecordingMissing):
        storage.get(meeting_prefix("alice", "m1").rstrip("/"))  # a folder of keys is no object


def test_exists(storage: RecordingStorage) -> None:
    key = chunk_key("alice", "m1", "s1", 0)
    assert not storage.exists(key)
    storage.put(key, b"x")
    assert storage.exists(key)
    assert not storage.exists(chunk_key("alice", "m1", "s1", 1))


def test_delete_prefix_deletes_one_meeting_and_nothing_else(storage: RecordingStorage) -> None:
    doomed = [chunk_key("al", "m1", session, seq) for session in ("s1", "s2") for seq in range(3)]
    kept = [
        chunk_key("al", "m10", "s1", 0),  # a meeting id the doomed one is a prefix of
        chunk_key("al", "m2", "s1", 0),  # another meeting of the same user
        chunk_key("alice", "m1", "s1", 0),  # a user id "al" is a prefix of, same meeting id
        chunk_key("al.ice", "m1", "s1", 0),
    ]
    for key in doomed + kept:
        storage.put(key, key.encode())

    assert storage.delete_prefix(meeting_prefix("al", "m1")) == len(doomed)
    assert not any(storage.exists(key) for key in doomed)
    assert all(storage.get(key) == key.encode() for key in kept)
    assert storage.delete_prefix(meeting_prefix("al", "m1")) == 0  # deleting again finds nothing


def test_a_prefix_is_whole_segments(storage: RecordingStorage) -> None:
    storage.put(chunk_key("alice", "m1", "s1", 0), b"x")
    assert storage.delete_prefix("al") == 0
    assert storage.delete_prefix("al/") == 0
    assert storage.exists(chunk_key("alice", "m1", "s1", 0))
    assert storage.delete_prefix("alice") == 1


def test_delete_prefix_over_more_than_a_thousand_objects(storage: RecordingStorage) -> None:
    # 1,100 objects: over S3's 1,000 a listing page and a DeleteObjects request may hold.
    if isinstance(storage, S3Storage):
        storage.client = counting = CountingClient(storage.client)
    keys = [chunk_key("alice", "m1", f"s{seq % 3}", seq) for seq in range(1_100)]
    with ThreadPoolExecutor(8) as pool:  # boto3 clients may be shared between threads
        list(pool.map(lambda key: storage.put(key, b"."), keys))
    storage.put(chunk_key("alice", "m2", "s1", 0), b"kept")

    assert storage.delete_prefix(meeting_prefix("alice", "m1")) == 1_100
    assert not any(storage.exists(key) for key in keys[::50] + keys[-5:])
    assert storage.get(chunk_key("alice", "m2", "s1", 0)) == b"kept"
    if isinstance(storage, S3Storage):
        assert counting.deletes == [1_000, 100]


class CountingClient:
    """A boto3 client that counts the keys of each DeleteObjects request made through it."""

    def __init__(self, client: Any):
        self.client = client
        self.deletes: list[int] = []

    def delete_objects(self, **kwargs: Any) -> Any:
        self.deletes.append(len(kwargs["Delete"]["Objects"]))
        return self.client.delete_objects(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


HOSTILE_IDS = ["a/b", "a", "..", ".", "../a", "a/../b", "%2e%2e", "%2F", "a%2Fb", "%", ".hidden", "a\\b", "~", "ä/ö"]


def test_user_ids_cannot_escape_their_prefix(storage: RecordingStorage) -> None:
    keys = {user: chunk_key(user, "m1", "s1", 0) for user in HOSTILE_IDS}
    assert len(set(keys.values())) == len(keys)  # no two users share a key
    for user, key in keys.items():
        assert key.startswith(meeting_prefix(user, "m1"))
        assert len(key.split("/")) == 4, key  # user, meeting, session, chunk: one segment each
        storage.put(key, user.encode())
    for user, key in keys.items():
        assert storage.get(key) == user.encode()

    # Deleting one user's meeting touches no other user's, whatever their ids hold.
    for deleted in HOSTILE_IDS:
        assert storage.delete_prefix(meeting_prefix(deleted, "m1")) == 1
        assert not storage.exists(keys[deleted])
        left = HOSTILE_IDS[HOSTILE_IDS.index(deleted) + 1 :]
        assert all(storage.get(keys[user]) == user.encode() for user in left)


def test_hostile_meeting_and_session_ids_stay_one_segment() -> None:
    key = chunk_key("alice", "../../etc", "/s/../x", 7)
    assert key.split("/")[1:] == ["%2E.%2F..%2Fetc", "%2Fs%2F..%2Fx", "00000007.wav"]
    assert chunk_key("bob+tag@example.com", "m:1", "s-1_2.3", 0) == "bob+tag@example.com/m:1/s-1_2.3/00000000.wav"


@pytest.mark.parametrize("key", ["", "/a", "a//b", "a/", "a/./b", "a/../b", "..", "a\\b", "a/b\x00", "a\nb", "x" * 256])
def test_malformed_keys_are_refused_by_every_backend(storage: RecordingStorage, key: str) -> None:
    with pytest.raises(ValueError):
        validate_key(key)
    with pytest.raises(ValueError):
        storage.put(key, b"x")
    with pytest.raises(ValueError):
        storage.get(key)
    with pytest.raises(ValueError):
        storage.exists(key)
    if key not in ("a/",):  # `a/` is a fine prefix
        with pytest.raises(ValueError):
            storage.delete_prefix(key)


def test_folder_storage_writes_only_under_its_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    storage = FolderStorage(root)
    for user in HOSTILE_IDS:
        storage.put(chunk_key(user, "..", "..", 0), b"x")
    outside = [p for p in tmp_path.rglob("*") if root not in p.parents and p != root]
    assert outside == []
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]  # no temporary file left


def test_s3_storage_keeps_to_its_own_prefix(s3_endpoint: str) -> None:
    bucket, client = new_bucket(s3_endpoint), s3_client(s3_endpoint)
    client.put_object(Bucket=bucket, Key="recordingsX/alice/m1/s1/00000000.wav", Body=b"neighbour")
    client.put_object(Bucket=bucket, Key="alice/m1/s1/00000000.wav", Body=b"neighbour")
    storage = S3Storage(bucket, "recordings", client)  # without its `/`: still a folder
    storage.put(chunk_key("alice", "m1", "s1", 0), b"ours")

    listed = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert "recordings/alice/m1/s1/00000000.wav" in listed
    assert storage.delete_prefix(meeting_prefix("alice", "m1")) == 1
    listed = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert listed == ["alice/m1/s1/00000000.wav", "recordingsX/alice/m1/s1/00000000.wav"]


def test_storage_from_settings_for_s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # boto3's usual sources, as a deployment's: here the environment, and no profile or file.
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    bucket = new_bucket(s3_endpoint)
    settings = Settings.from_env({"RECORDING_STORAGE": "s3", "RECORDING_S3_BUCKET": bucket,
                                  "RECORDING_S3_ENDPOINT_URL": s3_endpoint, "RECORDING_S3_PREFIX": "rec/"})  # fmt: skip
    storage = storage_from_settings(settings)
    assert isinstance(storage, S3Storage)
    storage.put(chunk_key("alice", "m1", "s1", 0), b"x")
    assert s3_client(s3_endpoint).get_object(Bucket=bucket, Key="rec/alice/m1/s1/00000000.wav")["Body"].read() == b"x"


def test_storage_from_settings_for_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = storage_from_settings(Settings.from_env({"RECORDING_FOLDER": str(tmp_path / "r")}))
    assert isinstance(storage, FolderStorage) and storage.root == (tmp_path / "r").resolve()
    monkeypatch.chdir(tmp_path)
    storage = storage_from_settings(Settings.from_env({"STATE_DIR": "state"}))
    assert isinstance(storage, FolderStorage) and storage.root == (tmp_path / "state" / "recordings").resolve()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"RECORDING_STORAGE": "gcs"}, "RECORDING_STORAGE='gcs' is not one of: folder, s3"),
        ({"RECORDING_STORAGE": "s3"}, "RECORDING_S3_BUCKET"),
    ],
)
def test_storage_from_settings_refuses_what_it_cannot_use(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        storage_from_settings(Settings.from_env(environ))


T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)


def test_a_meeting_of_two_sessions_assembled_from_the_storage(storage: RecordingStorage) -> None:
    """Chunks stored as bot-manager will store them, read back as one file, whole and by ranges."""
    rng = np.random.default_rng(5)
    spoken = rng.integers(-30_000, 30_000, 16_000 * 8, dtype=np.int16)  # 8 s said in the meeting
    sent = [  # (session, session start, seq, offset ms, the part of `spoken` its chunk holds, in ms)
        ("first", T0, 0, 0, (0, 2_000)),
        ("first", T0, 1, 3_000, (3_000, 4_500)),  # 1 s of silence left out before it
        ("second", T0 + timedelta(seconds=4), 0, 0, (4_000, 6_000)),  # relaunched over first's end
        ("second", T0 + timedelta(seconds=4), 1, 2_500, (6_500, 8_000)),
    ]
    chunks = []
    for session, session_start, seq, offset_ms, (begin, end) in sent:
        audio = spoken[begin * 16 : end * 16]
        key = chunk_key("alice@example.com", "meeting-1", session, seq)
        storage.put(key, encode_wav(audio.tobytes()))
        chunks.append(StoredChunk(session, seq, chunk_start(session_start, offset_ms), len(audio), key))

    timeline = Timeline.build(chunks)
    size = wav_size(timeline)
    wav = b"".join(read_wav(timeline, storage, 0, size))
    expected = spoken.copy()
    expected[2_000 * 16 : 3_000 * 16] = 0
    expected[6_000 * 16 : 6_500 * 16] = 0
    assert len(wav) == size == 44 + 2 * len(expected)
    np.testing.assert_array_equal(np.frombuffer(wav[44:], np.int16), expected)
    for start, end in [(0, 44), (0, 1), (43, 47), (44 + 63_999, 44 + 64_001), (100_000, 200_001), (size - 3, size)]:
        assert b"".join(read_wav(timeline, storage, start, end)) == wav[start:end]


def test_a_store_without_batch_deletes_gets_one_delete_per_object(s3_endpoint: str) -> None:
    """GCS's XML API answers DeleteObjects 400 InvalidArgument (boto/boto3#2293): a meeting's
    recording is still deleted, object by object, and the store is not asked for batches again."""
    client = s3_client(s3_endpoint)
    refused: list[int] = []

    def as_gcs_answers(request: Any, **_: Any) -> Any:
        refused.append(1)
        body = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InvalidArgument</Code><Message>Invalid argument.</Message></Error>"
        return AWSResponse(request.url, 400, {"Content-Type": "application/xml"}, _Raw(body))

    client.meta.events.register("before-send.s3.DeleteObjects", as_gcs_answers)
    storage = S3Storage(new_bucket(s3_endpoint), "recordings/", client)
    keys = [chunk_key("gcs-user", "m1", "s1", seq) for seq in range(5)]
    for key in keys:
        storage.put(key, b".")
    storage.put(chunk_key("gcs-user", "m2", "s1", 0), b"kept")

    assert storage.delete_prefix(meeting_prefix("gcs-user", "m1")) == 5
    assert not any(storage.exists(key) for key in keys)
    assert storage.get(chunk_key("gcs-user", "m2", "s1", 0)) == b"kept"
    storage.put(keys[0], b".")
    assert storage.delete_prefix(meeting_prefix("gcs-user", "m1")) == 1
    assert refused == [1], "asked for a batch once, then never again"


class _Raw:
    """The raw stream botocore reads a response body from."""

    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body
