"""Where dead letters are kept: a Redis stream, with a consumer group whose acknowledgements
say which were handled (functions/bot_manager/dead_letters.py writes and drains it; the gateway's
admin API lists it)."""
from __future__ import annotations

import json
import logging
from typing import Any

import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
STREAM = "vexa:dead-letters"
GROUP = "worker"  # the consumer group whose acknowledgements say "handled"
CONSUMER = "drain"  # one name for every drain: an entry a crashed drain took is read again by the next
PAYLOAD_FIELDS = (b"headers", b"body")  # the event itself, kept only where it may be acted on
Entry = tuple[bytes, "dict[bytes, bytes] | None"]  # stream id, fields (None once trimmed away)
PENDING_LISTED = 10_000  # enough to tell handled from pending among the newest entries an operator lists


def keep(client: redis.Redis, entry: dict[str, str], headers: dict[str, str] | None, body: bytes | None, kept: int) -> str:
    """Append a dead letter (with the event itself where it may be acted on); its stream id."""
    fields: dict[str, Any] = dict(entry)
    if headers is not None and body is not None:
        fields["headers"] = json.dumps(headers)
        fields["body"] = body
    entry_id = client.xadd(STREAM, fields, maxlen=kept, approximate=True)
    return entry_id.decode()


def ensure_group(client: redis.Redis) -> None:
    try:
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def read(client: redis.Redis, start: str, batch: int) -> list[Entry]:
    """Up to `batch` entries for the drain: from "0" those it read and did not acknowledge, from ">" new ones."""
    answer = client.xreadgroup(GROUP, CONSUMER, {STREAM: start}, count=batch)
    return answer[0][1] if answer else []


def ack(client: redis.Redis, entry_id: bytes) -> None:
    client.xack(STREAM, GROUP, entry_id)


def waiting(client: redis.Redis) -> int:
    """How many dead letters are still to be handled: never read by a drain, or read and not finished."""
    return _waiting(_group(client))


def listing(client: redis.Redis, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """How many are waiting (as `waiting`), and the newest `limit` dead letters, newest first, each
    with its stream id and whether it was handled."""
    group = _group(client)
    last_read = _stream_id(group["last-delivered-id"])
    pending_ids = {p["message_id"] for p in client.xpending_range(STREAM, GROUP, min="-", max="+", count=PENDING_LISTED)}
    entries = []
    for entry_id, fields in client.xrevrange(STREAM, count=limit):
        entry: dict[str, Any] = {key.decode(): value.decode() for key, value in fields.items() if key not in PAYLOAD_FIELDS}
        entry["id"] = entry_id.decode()
        entry["handled"] = _stream_id(entry_id) <= last_read and entry_id not in pending_ids
        entries.append(entry)
    return _waiting(group), entries


def _waiting(group: dict[str, Any]) -> int:
    return int(group["pending"]) + int(group.get("lag") or 0)


def _group(client: redis.Redis) -> dict[str, Any]:
    ensure_group(client)
    return next(g for g in client.xinfo_groups(STREAM) if g["name"].decode() == GROUP)


def _stream_id(value: bytes) -> tuple[int, int]:
    milliseconds, sequence = value.decode().split("-")
    return int(milliseconds), int(sequence)


class DeadLetterMetrics(Collector):
    """The dead letters still to be acted on, read from Redis at scrape time."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def collect(self) -> list[Metric]:
        try:
            count = waiting(self.client)
        except redis.RedisError as exc:
            log.error("metrics.redis_unavailable", extra={"error": str(exc)})
            return []
        gauge = GaugeMetricFamily("vexa_dead_letters_pending", "Dead letters not yet acted on (GET /admin/dead-letters)")
        gauge.add_metric([], count)
        return [gauge]
