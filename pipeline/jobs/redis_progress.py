"""Job state in Redis for the Celery backend: a hash per job, a stream of its events, a heartbeat key with a TTL.

Keys (all under STUDIO_REDIS_PREFIX, default `studio:`): `job-ids` (counter), `jobs` (sorted set of ids),
`job:<id>` (hash), `job:<id>:events` (stream: one entry per progress.jsonl line, plus status changes),
`job:<id>:alive` (the worker's heartbeat, expires after STUDIO_WORKER_HEARTBEAT_TTL s), `worker:<name>`.
Every status change is one Lua script: compare-and-set on status (and attempt), fields and a stream entry together.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from typing import Any

from ..errors import UserError

STREAM_MAXLEN = 200_000
_NUMBERS = {"id": int, "slots": int, "mem_bytes": int, "attempt": int, "pid": int, "exit_code": int,
            "progress_offset": int, "retries": int, "max_retries": int, "heartbeat": float, "cancel_requested": float,
            "created_at": float, "queued_at": float, "started_at": float, "ended_at": float, "updated_at": float,
            "wall_seconds": float}
_JSON = ("argv", "gpu_ids", "config", "tags")

# KEYS: hash, stream, alive, active set (queued + running ids). ARGV: expected statuses (JSON list), new status
# ('' keeps it), attempt ('' any), fields (JSON; null deletes), event JSON ('' none), stream maxlen,
# '1' = only when the heartbeat key is gone, alive action ('' | 'del' | '<ttl>:<worker>').
_CAS = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
local ok = false
for _, s in ipairs(cjson.decode(ARGV[1])) do if s == status then ok = true end end
if not ok then return false end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[3] then return false end
if ARGV[7] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then return false end
for k, v in pairs(cjson.decode(ARGV[4])) do
  if v == cjson.null then redis.call('HDEL', KEYS[1], k) else redis.call('HSET', KEYS[1], k, tostring(v)) end
end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'status', ARGV[2])
  if ARGV[2] == 'queued' or ARGV[2] == 'running' then
    redis.call('ZADD', KEYS[4], redis.call('HGET', KEYS[1], 'id'), redis.call('HGET', KEYS[1], 'id'))
  else
    redis.call('ZREM', KEYS[4], redis.call('HGET', KEYS[1], 'id'))
  end
end
if ARGV[5] ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'e', ARGV[5], 'from', status)
end
if ARGV[8] == 'del' then redis.call('DEL', KEYS[3])
elseif ARGV[8] ~= '' then
  local sep = string.find(ARGV[8], ':', 1, true)
  redis.call('SET', KEYS[3], string.sub(ARGV[8], sep + 1), 'EX', tonumber(string.sub(ARGV[8], 1, sep - 1)))
end
return status
"""


def redis_url() -> str:
    """The Redis URL shared by the app and the workers (STUDIO_REDIS_URL, default redis://127.0.0.1:6379/0)."""
    return os.environ.get("STUDIO_REDIS_URL", "").strip() or "redis://127.0.0.1:6379/0"


def key_prefix() -> str:
    """Prefix of every key the studio and its Celery app write (STUDIO_REDIS_PREFIX, default `studio:`)."""
    return os.environ.get("STUDIO_REDIS_PREFIX", "").strip() or "studio:"


def heartbeat_ttl_s() -> float:
    """Seconds a worker's heartbeat lives; a running job without one is interrupted (STUDIO_WORKER_HEARTBEAT_TTL)."""
    raw = os.environ.get("STUDIO_WORKER_HEARTBEAT_TTL", "30")
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"STUDIO_WORKER_HEARTBEAT_TTL must be a number of seconds, got {raw!r}") from None
    if value < 1:
        raise UserError(f"STUDIO_WORKER_HEARTBEAT_TTL must be at least 1 second, got {raw!r}")
    return value


def _encode(value: Any) -> Any:
    """A value as Redis stores it: JSON for lists and dicts, numbers as they are."""
    if value is None:
        return None
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, bool):
        return int(value)
    return value if isinstance(value, int | float) else str(value)


def _text(value: Any) -> str | None:
    encoded = _encode(value)
    return None if encoded is None else str(encoded)


def decode_job(raw: dict[str, str]) -> dict[str, Any]:
    """A job hash as Python values (numbers, lists, dicts)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _NUMBERS:
            out[key] = _NUMBERS[key](float(value)) if value != "" else None
        elif key in _JSON:
            out[key] = json.loads(value) if value else None
        else:
            out[key] = value
    return out


class RedisJobs:
    """Job hashes, event streams, heartbeats and worker adverts of one Redis database and key prefix."""

    def __init__(self, url: str | None = None, prefix: str | None = None, client: Any = None) -> None:
        import redis

        self.url, self.prefix = url or redis_url(), prefix if prefix is not None else key_prefix()
        self.r: Any = client or redis.Redis.from_url(self.url, decode_responses=True, socket_connect_timeout=5,
                                                health_check_interval=30)
        self._cas = self.r.register_script(_CAS)

    def key(self, job_id: int, part: str = "") -> str:
        return f"{self.prefix}job:{int(job_id)}{':' + part if part else ''}"

    def ping(self) -> None:
        """Raise a UserError naming the URL when Redis does not answer."""
        import redis

        try:
            self.r.ping()
        except redis.RedisError as exc:
            raise UserError(f"cannot reach Redis at {self.url} ({exc}); start redis-server or set STUDIO_REDIS_URL"
                            ) from None

    # -- jobs ---------------------------------------------------------------------------------------------
    def create(self, fields: dict[str, Any]) -> int:
        """A new queued job (attempt 1) with its first stream entry; returns its id."""
        job_id = int(self.r.incr(self.prefix + "job-ids"))
        now = time.time()
        data = {**fields, "id": job_id, "status": "queued", "attempt": 1, "created_at": now, "queued_at": now,
                "updated_at": now}
        event = status_event(job_id, "queued", 1, detail="submitted")
        with self.r.pipeline() as pipe:
            pipe.hset(self.key(job_id), mapping={k: _encode(v) for k, v in data.items() if v is not None})
            pipe.xadd(self.key(job_id, "events"), {"e": json.dumps(event), "from": ""}, maxlen=STREAM_MAXLEN)
            pipe.zadd(self.prefix + "jobs", {str(job_id): job_id})
            pipe.zadd(self.prefix + "active", {str(job_id): job_id})
            pipe.execute()
        return job_id

    def get(self, job_id: int) -> dict[str, Any] | None:
        """The decoded job hash, None when there is no such job."""
        raw = self.r.hgetall(self.key(job_id))
        return decode_job(raw) if raw else None

    def ids(self, active: bool = False) -> list[int]:
        """Every job id, or only the queued and running ones, oldest first."""
        return [int(i) for i in self.r.zrange(self.prefix + ("active" if active else "jobs"), 0, -1)]

    def get_many(self, ids: list[int]) -> list[dict[str, Any]]:
        """Several decoded job hashes in one round trip (missing ones left out)."""
        with self.r.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(self.key(job_id))
            return [decode_job(raw) for raw in pipe.execute() if raw]

    def sweep(self) -> list[dict[str, Any]]:
        """Settle every running job whose worker stopped beating (what any CLI call and worker start do)."""
        settled = []
        for job in self.get_many(self.ids(active=True)):
            done = self.settle_lost(job)
            if done is not None:
                settled.append(done)
        return settled

    def cas(self, job_id: int, expect: str | Iterable[str], to: str = "", *, expect_attempt: int | None = None,
            detail: str | None = None, only_if_dead: bool = False, alive: str = "",
            **fields: Any) -> dict[str, Any] | None:
        """Compare-and-set: change status/fields only while the status is one of `expect` (and the attempt matches).

        A status change also appends a status event to the stream. Returns the new job, None when nothing changed.
        """
        expected = [expect] if isinstance(expect, str) else list(expect)
        fields["updated_at"] = time.time()
        event = ""
        if to:
            new_attempt = int(fields.get("attempt") or expect_attempt or self.r.hget(self.key(job_id), "attempt") or 1)
            event = json.dumps(status_event(job_id, to, new_attempt, fields.get("error"), detail))
        before = self._cas(keys=[self.key(job_id), self.key(job_id, "events"), self.key(job_id, "alive"),
                                 self.prefix + "active"],
                           args=[json.dumps(expected), to, "" if expect_attempt is None else str(int(expect_attempt)),
                                 json.dumps({k: _text(v) for k, v in fields.items()}), event, STREAM_MAXLEN,
                                 "1" if only_if_dead else "0", alive])
        return None if before is None else self.get(job_id)

    def beat(self, job_id: int, worker: str, ttl: float) -> None:
        """Refresh the heartbeat of a running job."""
        with self.r.pipeline() as pipe:
            pipe.set(self.key(job_id, "alive"), worker, ex=max(1, int(round(ttl))))
            pipe.hset(self.key(job_id), "heartbeat", time.time())
            pipe.execute()

    def alive(self, job_id: int) -> bool:
        return bool(self.r.exists(self.key(job_id, "alive")))

    def settle_lost(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """A running job whose heartbeat expired becomes interrupted (its worker is gone); None if it is alive."""
        if job.get("status") != "running" or self.alive(job["id"]):
            return None
        ended = job.get("heartbeat") or time.time()
        wall = float(job.get("wall_seconds") or 0.0) + max(0.0, ended - (job.get("started_at") or ended))
        lost = job.get("worker") or "its worker"
        return self.cas(job["id"], "running", "interrupted", expect_attempt=job.get("attempt"), only_if_dead=True,
                        detail="worker lost: heartbeat expired", error=f"worker {lost} stopped sending heartbeats",
                        ended_at=ended, wall_seconds=round(wall, 3))

    # -- the event stream ----------------------------------------------------------------------------------
    def append(self, job_id: int, events: Iterable[dict[str, Any]]) -> int:
        """XADD progress events (one stream entry per progress.jsonl line); returns how many."""
        count = 0
        with self.r.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd(self.key(job_id, "events"), {"e": json.dumps(event)}, maxlen=STREAM_MAXLEN)
                count += 1
            if count:
                pipe.execute()
        return count

    def read(self, job_id: int, after: str = "0-0", block_ms: int | None = None,
             count: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        """Stream entries after an id as (id, event); status entries carry `from_status`."""
        stream = self.key(job_id, "events")
        if block_ms is not None:
            reply = self.r.xread({stream: after}, count=count, block=max(1, block_ms))
            entries = reply[0][1] if reply else []
        else:
            entries = self.r.xrange(stream, min=f"({after}" if after != "0-0" else "-", count=count)
        return [(entry_id, _entry(fields)) for entry_id, fields in entries]

    def read_all(self, job_id: int, after: str = "0-0") -> list[tuple[str, dict[str, Any]]]:
        """Every stream entry of a job after an id (all by default), oldest first."""
        out: list[tuple[str, dict[str, Any]]] = []
        while batch := self.read(job_id, out[-1][0] if out else after):
            out.extend(batch)
        return out

    def last_id(self, job_id: int) -> str:
        """Id of the newest stream entry ('0-0' when empty)."""
        newest = self.r.xrevrange(self.key(job_id, "events"), count=1)
        return newest[0][0] if newest else "0-0"

    def last_seq(self, job_id: int) -> int:
        """The highest progress seq already in the stream (0 when none)."""
        before = "+"
        while True:
            entries = self.r.xrevrange(self.key(job_id, "events"), max=before, count=200)
            for _entry_id, fields in entries:
                seq = _entry(fields).get("seq")
                if isinstance(seq, int):
                    return seq
            if len(entries) < 200:
                return 0
            before = f"({entries[-1][0]}"

    # -- workers ---------------------------------------------------------------------------------------------
    def advertise(self, name: str, info: dict[str, Any], ttl: float) -> None:
        """Announce a worker (GPUs, slots, queues) for `ttl` seconds."""
        self.r.set(f"{self.prefix}worker:{name}", json.dumps({**info, "name": name, "seen": time.time()}),
                   ex=max(1, int(ttl)))

    def retire(self, name: str) -> None:
        self.r.delete(f"{self.prefix}worker:{name}")

    def workers(self) -> list[dict[str, Any]]:
        """Workers whose advert has not expired, by name."""
        keys = sorted(self.r.scan_iter(f"{self.prefix}worker:*", count=500))
        values = self.r.mget(keys) if keys else []
        return [json.loads(v) for v in values if v]

    def clear(self) -> int:
        """Delete every key under this prefix (tests and `worker --purge`); returns how many."""
        keys = list(self.r.scan_iter(f"{self.prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            self.r.delete(*keys[start:start + 500])
        return len(keys)


def _entry(fields: dict[str, str]) -> dict[str, Any]:
    try:
        event = json.loads(fields.get("e", "{}"))
    except ValueError:
        return {}
    if not isinstance(event, dict):
        return {}
    if fields.get("from") is not None and event.get("event") == "status":
        event["from_status"] = fields["from"] or None
    return event


def status_event(job_id: int, status: str, attempt: int, error: str | None = None,
                 detail: str | None = None) -> dict[str, Any]:
    """The stream entry of a status change (the same shape `watch` yields, plus when and why)."""
    event: dict[str, Any] = {"event": "status", "job_id": int(job_id), "status": status, "attempt": int(attempt),
                             "at": round(time.time(), 3)}
    if error:
        event["error"] = error
    if detail:
        event["detail"] = detail
    return event
