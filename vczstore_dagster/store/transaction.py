"""One operation = one commit. Icechunk: write on a temporary branch, audit, then move ``main`` by
compare-and-swap, redoing the operation from the new tip if ``main`` moved. Plain Zarr: write, audit,
then consolidate the metadata last (the commit point)."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from vczstore_dagster.store.errors import ConcurrentWriteError, InvalidInputError
from vczstore_dagster.store.location import Store, storage_error

log = logging.getLogger(__name__)
ATTEMPTS_ENV = "VCZSTORE_COMMIT_ATTEMPTS"
MAX_ATTEMPTS = 8
WIP_BRANCH_PREFIX = "vczstore-wip-"
_WIP_TIME = "%Y%m%dT%H%M%SZ"


@dataclasses.dataclass
class Committed:
    result: Any
    snapshot_id: str | None
    parent_snapshot_id: str | None
    attempts: int


def wip_branch_name() -> str:
    """A temporary branch named after its creation time, so that ``purge`` can tell a writer in
    flight from one that died (``vczstore-wip-20261201T083000Z-1a2b3c4d``)."""
    return f"{WIP_BRANCH_PREFIX}{datetime.now(UTC):{_WIP_TIME}}-{uuid.uuid4().hex[:8]}"


def wip_branch_created(name: str) -> datetime | None:
    """When a temporary branch was created (None: not one, or named before times were kept)."""
    stamp = name.removeprefix(WIP_BRANCH_PREFIX).split("-")[0]
    try:
        return datetime.strptime(stamp, _WIP_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


_passes: dict[tuple[str, str], int] = {}


def pause_for_tests(point: str) -> None:
    """Hold a writer at a named point so that a test can act there for real: SIGKILL it, move
    ``main`` under it, write beside it. Only with ``VCZSTORE_TEST_PAUSE_AT=point``: the pass
    number (1 for the first time the point is reached, 2 for the next...) is written to the file
    ``VCZSTORE_TEST_PAUSE_MARKER``; the writer then waits until the file
    ``VCZSTORE_TEST_PAUSE_UNTIL`` holds a number at least that pass (empty: 1), or for
    ``VCZSTORE_TEST_PAUSE_SECONDS`` (default 60) when no such file is named."""
    if os.environ.get("VCZSTORE_TEST_PAUSE_AT") != point:
        return
    marker = os.environ.get("VCZSTORE_TEST_PAUSE_MARKER", "")
    n = _passes[point, marker] = _passes.get((point, marker), 0) + 1
    if marker:
        with open(marker + ".tmp", "w") as f:
            f.write(str(n))
        os.replace(marker + ".tmp", marker)
    deadline = time.monotonic() + float(os.environ.get("VCZSTORE_TEST_PAUSE_SECONDS", "60"))
    until = os.environ.get("VCZSTORE_TEST_PAUSE_UNTIL")
    while time.monotonic() < deadline:
        if until and os.path.exists(until):
            with open(until) as f:
                if int(f.read().strip() or 1) >= n:
                    return
        time.sleep(0.01)


def commit(
    store: Store,
    operation: Callable[[Any, str | None], Any],
    *,
    message: str,
    metadata: dict | None = None,
    audit: Callable[[Any, Any], None] | None = None,
    published: Callable[[str], None] | None = None,
) -> Committed:
    """Run ``operation(group, parent_snapshot) -> result`` and publish it as one commit.

    ``audit(group_after, result)`` raises :class:`AuditError` to refuse publishing.
    ``published(snapshot_id)`` runs once ``main`` points at the commit, still under the writer's
    lock (a release tags it there: every ref change of an operation happens under the lock).
    """
    if store.backend == "icechunk":
        return _commit_icechunk(store, operation, message, metadata or {}, audit, published)
    return _commit_plain(store, operation, audit, (metadata or {}).get("operation", "write"))


def commit_attempts() -> int:
    """How many times an operation is redone when ``main`` moved under it (``VCZSTORE_COMMIT_ATTEMPTS``)."""
    value = os.environ.get(ATTEMPTS_ENV)
    if not value:
        return MAX_ATTEMPTS
    if not value.isdigit() or int(value) < 1:
        raise InvalidInputError(f"{ATTEMPTS_ENV}={value!r}: give a whole number of attempts, 1 or more")
    return int(value)


def _commit_icechunk(store, operation, message, metadata, audit, published) -> Committed:
    import icechunk
    import zarr

    repo = store.repo
    what = metadata.get("operation", "write")
    attempts = commit_attempts()
    for attempt in range(1, attempts + 1):
        with store.location.write_lock(what):
            try:
                base = repo.lookup_branch("main")
                wip = wip_branch_name()
                repo.create_branch(wip, base)
            except icechunk.IcechunkError as exc:
                raise storage_error(store.location, exc) from exc
            try:
                session = repo.writable_session(wip)
                group = zarr.open_group(session.store, mode="r+")
                pause_for_tests("write")
                result = operation(group, base)
                pause_for_tests("commit")
                snapshot = session.commit(message, metadata=metadata)
                pause_for_tests("publish")
                if audit is not None:
                    after = zarr.open_group(repo.readonly_session(snapshot_id=snapshot).store, mode="r")
                    audit(after, result)
                try:
                    repo.reset_branch("main", snapshot, from_snapshot_id=base)
                except icechunk.ConflictError:
                    log.info("main moved during the operation (attempt %d of %d); redoing it from "
                             "the new tip", attempt, attempts)
                    continue
                pause_for_tests("published")
                if published is not None:
                    published(snapshot)
                return Committed(result, snapshot, base, attempt)
            finally:
                try:
                    repo.delete_branch(wip)
                except icechunk.IcechunkError:
                    pass
        time.sleep(min(0.05 * 2**attempt, 2.0))
    raise ConcurrentWriteError(
        f"{store.url}: other writers kept moving main: {what} gave up after {attempts} attempts "
        f"(nothing was published; run it again, or allow more attempts with {ATTEMPTS_ENV})"
    )


def _commit_plain(store, operation, audit, what) -> Committed:
    import zarr

    from vczstore_dagster.store.plain import DeferredRootStore, consolidate, roll_back_uncommitted

    with store.location.write_lock(what):
        base = store.location.zarr_store(read_only=False)
        rolled_back = roll_back_uncommitted(base)
        if rolled_back:
            log.warning("rolled back %d array metadata document(s) left by an interrupted write",
                        rolled_back)
        deferred = DeferredRootStore(base)
        # after the roll-back, every array's own metadata is the committed one
        group = zarr.open_group(deferred, mode="r+", use_consolidated=False)
        result = operation(group, None)
        if audit is not None:
            audit(zarr.open_group(deferred, mode="r", use_consolidated=False), result)
        pause_for_tests("commit")
        consolidate(deferred)
    return Committed(result, None, None, 1)
