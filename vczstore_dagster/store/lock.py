"""The writer's lock beside a local store (``STORE.lock``).

Icechunk on a local disk keeps its refs in one object and can lose concurrent commits and ref
changes, so every writer holds an exclusive ``flock`` on ``STORE.lock`` from its first ref change
to its last. The holder writes who it is into the file (pid, host, operation, start time; never a
sample ID), so that a writer that has to wait can say for whom, and gives up after the lock
timeout (``VCZSTORE_LOCK_TIMEOUT`` seconds, default one hour; ``--lock-timeout`` on the CLI).
The kernel releases the lock of a process that dies: a stale file never blocks anyone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime

from vczstore_dagster.store.errors import InvalidInputError, LockTimeoutError

log = logging.getLogger(__name__)
TIMEOUT_ENV = "VCZSTORE_LOCK_TIMEOUT"
DEFAULT_TIMEOUT = 3600.0
STILL_WAITING_EVERY = 60.0
_held: dict[tuple[str, int], int] = {}  # (lock path, thread) -> depth


def lock_timeout(explicit: float | None = None) -> float:
    """Seconds a writer waits for the lock: ``explicit``, else ``VCZSTORE_LOCK_TIMEOUT``, else an
    hour."""
    return seconds_setting(explicit, TIMEOUT_ENV, DEFAULT_TIMEOUT)


def seconds_setting(explicit: float | None, env: str, default: float) -> float:
    """A duration in seconds: ``explicit``, else the environment variable ``env``, else
    ``default``; anything but a number of seconds, 0 or more, is an error naming ``env``."""
    value = explicit if explicit is not None else os.environ.get(env) or default
    try:
        seconds = float(value)
    except ValueError:
        raise InvalidInputError(f"{env}={value!r} is not a number of seconds") from None
    if not seconds >= 0:
        raise InvalidInputError(f"{env}={value!r}: give 0 or more seconds")
    return seconds


@contextlib.contextmanager
def write_lock(path: str, operation: str, timeout: float | None = None):
    """Hold the exclusive lock at ``path`` (re-entrant within a thread)."""
    key = (path, threading.get_ident())
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    seconds = lock_timeout(timeout)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a+") as f:
        _acquire(f, path, operation, seconds)
        _held[key] = 1
        try:
            f.seek(0)
            f.truncate()
            f.write(json.dumps(holder(operation)) + "\n")
            f.flush()
            yield
        finally:
            del _held[key]
            f.seek(0)
            f.truncate()
            f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)


def holder(operation: str) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "operation": operation,
            "since": datetime.now(UTC).isoformat(timespec="seconds")}


def describe_holder(path: str) -> str:
    """Who holds the lock, as its holder wrote it ("an unknown writer" if it did not)."""
    try:
        with open(path) as f:
            info = json.loads(f.read() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "an unknown writer"
    return (f"{info.get('operation', 'a writer')} (pid {info['pid']} on {info.get('host', '?')}, "
            f"since {info.get('since', '?')})")


def _locked(f) -> bool:
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _acquire(f, path: str, operation: str, seconds: float) -> None:
    if _locked(f):
        return
    started = time.monotonic()
    who = describe_holder(path)
    log.warning("%s waits for the store's lock %s, held by %s; giving up after %s", operation,
                path, who, _duration(seconds))
    next_notice = started + STILL_WAITING_EVERY
    delay = 0.05
    while True:
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
        if _locked(f):
            return
        now = time.monotonic()
        if now - started >= seconds:
            raise LockTimeoutError(
                f"{path}: gave up {operation} after waiting {_duration(now - started)} for the "
                f"store's lock, held by {describe_holder(path)}. Run it again once that has "
                f"finished, or wait longer (--lock-timeout SECONDS or {TIMEOUT_ENV})"
            )
        if now >= next_notice:
            next_notice = now + STILL_WAITING_EVERY
            log.warning("%s still waiting for %s (%s so far), held by %s", operation, path,
                        _duration(now - started), describe_holder(path))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s" if seconds == int(seconds) else f"{seconds:.1f} s"
    return f"{seconds / 60:.0f} min"
