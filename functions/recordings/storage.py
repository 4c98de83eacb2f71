"""Where recordings' chunks are kept: a folder, or an S3-compatible bucket, behind one interface.

Keys are `/`-separated paths: `<user_id>/<meeting_pk>/<session_id>/<chunk_seq:08d>.wav`, each
segment percent-encoded by `chunk_key`, so a user id holding `/`, `..` or `%` stays one segment
inside its own prefix. Every key and prefix is checked by `validate_key` before a backend sees
it: S3 servers and file systems give `..`, `\\` or an empty segment meanings of their own.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Protocol
from urllib.parse import quote

from functions.common.errors import Unavailable
from functions.common.settings import Settings

# Kept as they are in a key segment besides letters, digits and `_.-~` (which `quote` keeps):
# the characters a user id may hold (functions/common/schemas.py's UserId), so valid ids read
# plainly in a bucket listing. `%` and `/` are always encoded, so encoding never collides.
_SAFE = "@+:"
MAX_SEGMENT_BYTES = 255  # a file name's limit on common file systems (NAME_MAX)
S3_DELETE_BATCH = 1000  # the most keys one DeleteObjects request may name
# How S3-compatible stores without DeleteObjects refuse it: GCS's XML API answers InvalidArgument
# or NotImplemented (boto/boto3#2293, syntasso/kratix#324); such a store gets one DELETE per object.
NO_BATCH_DELETE = frozenset({"InvalidArgument", "NotImplemented", "MalformedXML"})


class RecordingMissing(LookupError):
    """The key holds no object."""


class RecordingStorage(Protocol):
    """A flat store of bytes by key; a `put` of an existing key replaces it."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes:
        """The object's bytes; RecordingMissing if there is none."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix` (whole segments: `a/b` is `a/b/`, never `a/bc`);
        how many there were."""
        ...


def validate_key(key: str) -> str:
    """`key`, or ValueError if it is not a plain relative path of non-empty segments.

    Refused: an empty key or segment (`a//b`, a leading or trailing `/`), `.` and `..`,
    backslashes and control characters.
    """
    if not key:
        raise ValueError("a recording key may not be empty")
    if "\\" in key:
        raise ValueError(f"a recording key may not hold a backslash: {key!r}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise ValueError(f"a recording key may not hold control characters: {key!r}")
    if key.startswith("/"):
        raise ValueError(f"a recording key may not start with '/': {key!r}")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"a recording key may not hold an empty, '.' or '..' segment: {key!r}")
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise ValueError(f"a recording key's segment is longer than {MAX_SEGMENT_BYTES} bytes: {key!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """`prefix` as whole segments ending in `/`; ValueError as for validate_key.

    One trailing `/` is optional, so `al` and `al/` are the same prefix and neither is a
    prefix of `alice/`.
    """
    return validate_key(prefix.removesuffix("/")) + "/"


def encode_segment(value: str) -> str:
    """`value` as one key segment: percent-encoded, and never `.`, `..` or a hidden file name.

    Injective: a leading `.` becomes `%2E`, which no other value encodes to (`%` is encoded).
    """
    if not value:
        raise ValueError("a recording key's segment may not be empty")
    encoded = quote(value, safe=_SAFE)
    if encoded.startswith("."):
        encoded = "%2E" + encoded[1:]
    return encoded


def meeting_prefix(user_id: str, meeting_pk: str) -> str:
    """The prefix of every chunk of one meeting, ending in `/`."""
    return validate_prefix(f"{encode_segment(user_id)}/{encode_segment(meeting_pk)}")


def chunk_key(user_id: str, meeting_pk: str, session_id: str, chunk_seq: int) -> str:
    """Where chunk `chunk_seq` of bot session `session_id` of a meeting is kept."""
    if chunk_seq < 0:
        raise ValueError(f"chunk_seq must be >= 0, got {chunk_seq}")
    return validate_key(f"{meeting_prefix(user_id, meeting_pk)}{encode_segment(session_id)}/{chunk_seq:08d}.wav")


class FolderStorage:
    """Objects as files under `root`, a key's segments as folders."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def put(self, key: str, data: bytes) -> None:
        # Written beside its final name and renamed over it: a reader sees the old object or
        # the new one, never half of one, and a crash leaves only a temporary file behind.
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise RecordingMissing(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete_prefix(self, prefix: str) -> int:
        folder = self.root.joinpath(*validate_prefix(prefix).removesuffix("/").split("/"))
        if not folder.is_dir():
            return 0
        # Temporary files of unfinished puts are no objects: removed, not counted.
        count = sum(1 for path in folder.rglob("*") if path.is_file() and not _is_temporary(path))
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:  # removed meanwhile by another delete
            pass
        return count


def _is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")


class S3Storage:
    """Objects in an S3 bucket (AWS S3, GCS's XML API, MinIO), each key under `prefix`.

    `client` is a boto3 S3 client; boto3's clients are safe to share between threads.
    """

    def __init__(self, bucket: str, prefix: str, client: Any):
        self.bucket = bucket
        # The storage's own prefix is a folder too: `recordings` would otherwise touch `recordingsX/`.
        self.prefix = validate_prefix(prefix) if prefix.strip("/") else ""
        self.client = client
        self._batch_delete = True  # until the store says it has no DeleteObjects

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.ClientError as exc:
            if _is_not_found(exc):
                raise RecordingMissing(key) from None
            raise
        with answer["Body"] as body:
            return body.read()

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.ClientError as exc:
            if _is_not_found(exc):
                return False
            raise
        return True

    def delete_prefix(self, prefix: str) -> int:
        full_prefix = self.prefix + validate_prefix(prefix)
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full_prefix)
        deleted = 0
        batch: list[str] = []
        for page in pages:
            for item in page.get("Contents", []):
                batch.append(item["Key"])
                if len(batch) == S3_DELETE_BATCH:
                    deleted += self._delete(batch)
                    batch = []
        if batch:
            deleted += self._delete(batch)
        return deleted

    def _delete(self, keys: list[str]) -> int:
        if not self._batch_delete:
            for key in keys:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            return len(keys)
        try:
            answer = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True}
            )
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in NO_BATCH_DELETE:
                raise
            self._batch_delete = False
            return self._delete(keys)
        # DeleteObjects answers 200 even when some keys failed: they are listed in Errors.
        errors = answer.get("Errors", [])
        if errors:
            first = errors[0]
            raise RuntimeError(
                f"S3 refused to delete {len(errors)} of {len(keys)} objects in {self.bucket}, "
                f"e.g. {first.get('Key')!r}: {first.get('Code')} {first.get('Message')}"
            )
        return len(keys)


def _is_not_found(exc: Any) -> bool:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error.get("Code") in ("NoSuchKey", "404", "NotFound") or status == 404


class NoStorage:
    """RECORDING_STORAGE=none: a deployment that keeps no audio. Nothing is ever stored here
    (bot-manager records no meeting), so there is never anything to read or delete."""

    def put(self, key: str, data: bytes) -> None:
        raise Unavailable("recordings_off", "this deployment keeps no recordings (RECORDING_STORAGE=none)")

    def get(self, key: str) -> bytes:
        raise RecordingMissing(key)

    def exists(self, key: str) -> bool:
        return False

    def delete_prefix(self, prefix: str) -> int:
        return 0


STORAGE_KINDS = ("folder", "s3", "none")


@contextmanager
def storage_errors() -> Iterator[None]:
    """The storage's own failures (a full disk, S3 unreachable or refusing) as Unavailable: a
    503 for a client, a redelivery for the broker. A missing object and an invalid key stay what they are."""
    try:
        yield
    except (RecordingMissing, ValueError):
        raise
    except Exception as exc:  # botocore's errors, OSError: whatever the backend raises
        raise Unavailable("recording_storage_unavailable", f"the recording storage failed: {str(exc)[:300]}") from exc


def delete_recording(storage: RecordingStorage, user_id: str, meeting_pk: object) -> int:
    """Delete a meeting's stored audio; how many chunks there were."""
    with storage_errors():
        return storage.delete_prefix(meeting_prefix(user_id, str(meeting_pk)))


def storage_from_settings(settings: Settings) -> RecordingStorage:
    """The storage RECORDING_STORAGE names; ValueError for a setting it cannot work with."""
    kind = settings.recording_storage
    if kind == "none":
        return NoStorage()
    if kind == "folder":
        return FolderStorage(recording_folder(settings))
    if kind == "s3":
        if not settings.recording_s3_bucket:
            raise ValueError("RECORDING_STORAGE=s3 needs RECORDING_S3_BUCKET")
        import boto3  # here, not above: a `folder` deployment never pays for loading boto3

        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=settings.recording_s3_endpoint_url or None,
            region_name=settings.recording_s3_region or None,
            # Checksums only where the API requires them: since boto3 1.36 every upload carries
            # one by default, which S3-compatible stores such as GCS refuse.
            config=Config(request_checksum_calculation="when_required", response_checksum_validation="when_required"),
        )
        return S3Storage(settings.recording_s3_bucket, settings.recording_s3_prefix, client)
    raise ValueError(f"RECORDING_STORAGE={kind!r} is not one of: {', '.join(STORAGE_KINDS)}")


def recording_folder(settings: Settings) -> Path:
    """RECORDING_FOLDER, or STATE_DIR/recordings; a relative path is taken from the working
    directory, as every other STATE_DIR path is (the services run from the repository root)."""
    return Path(settings.recording_folder or Path(settings.state_dir) / "recordings").resolve()
