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
from typing import Any

from vczstore_dagster.store.errors import ConcurrentWriteError
from vczstore_dagster.store.location import Store, storage_error

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 8
WIP_BRANCH_PREFIX = "vczstore-wip-"


@dataclasses.dataclass
class Committed:
    result: Any
    snapshot_id: str | None
    parent_snapshot_id: str | None
    attempts: int


def pause_for_tests(point: str) -> None:
    """Let crash tests SIGKILL a writer at a known point (``VCZSTORE_TEST_PAUSE_AT=chunks|commit``)."""
    if os.environ.get("VCZSTORE_TEST_PAUSE_AT") == point:
        marker = os.environ.get("VCZSTORE_TEST_PAUSE_MARKER")
        if marker:
            with open(marker, "w") as f:
                f.write(point)
        time.sleep(float(os.environ.get("VCZSTORE_TEST_PAUSE_SECONDS", "60")))


def commit(
    store: Store,
    operation: Callable[[Any, str | None], Any],
    *,
    message: str,
    metadata: dict | None = None,
    audit: Callable[[Any, Any], None] | None = None,
) -> Committed:
    """Run ``operation(group, parent_snapshot) -> result`` and publish it as one commit.

    ``audit(group_after, result)`` raises :class:`AuditError` to refuse publishing.
    """
    if store.backend == "icechunk":
        return _commit_icechunk(store, operation, message, metadata or {}, audit)
    return _commit_plain(store, operation, audit)


def _commit_icechunk(store, operation, message, metadata, audit) -> Committed:
    import icechunk
    import zarr

    repo = store.repo
    for attempt in range(1, MAX_ATTEMPTS + 1):
        with store.location.write_lock():
            try:
                base = repo.lookup_branch("main")
                wip = WIP_BRANCH_PREFIX + uuid.uuid4().hex[:12]
                repo.create_branch(wip, base)
            except icechunk.IcechunkError as exc:
                raise storage_error(store.location, exc) from exc
            try:
                session = repo.writable_session(wip)
                group = zarr.open_group(session.store, mode="r+")
                result = operation(group, base)
                pause_for_tests("commit")
                snapshot = session.commit(message, metadata=metadata)
                if audit is not None:
                    after = zarr.open_group(repo.readonly_session(snapshot_id=snapshot).store, mode="r")
                    audit(after, result)
                try:
                    repo.reset_branch("main", snapshot, from_snapshot_id=base)
                except icechunk.ConflictError:
                    log.info("main moved during the operation; redoing it from the new tip")
                    continue
                return Committed(result, snapshot, base, attempt)
            finally:
                try:
                    repo.delete_branch(wip)
                except icechunk.IcechunkError:
                    pass
        time.sleep(min(0.05 * 2**attempt, 2.0))
    raise ConcurrentWriteError(
        f"{store.url}: other writers kept moving main; gave up after {MAX_ATTEMPTS} attempts"
    )


def _commit_plain(store, operation, audit) -> Committed:
    import zarr

    from vczstore_dagster.store.plain import DeferredRootStore, consolidate, roll_back_uncommitted

    with store.location.write_lock():
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
