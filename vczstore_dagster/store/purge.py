"""Make the store forget withdrawn samples: redact the releases that still hold them, then expire
history and garbage-collect, so that no object in storage keeps their data.

Icechunk never forgets through ``amend``: every snapshot since a chunk was written references it.
A release tag keeps its snapshot (and so the sample's chunks) alive, and a deleted tag's name can
never be reused, so a redacted release is re-tagged with the next revision suffix (``2026-11`` →
``2026-11-r1``).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import uuid
from datetime import UTC, datetime

import numpy as np

from vczstore_dagster.store import schema
from vczstore_dagster.store.cluster import ClusterWork, connect
from vczstore_dagster.store.ledger import ReleaseRecord, read_ledger, salted_hash, write_ledger
from vczstore_dagster.store.recompress import note_fast_columns
from vczstore_dagster.store.remove import blank_samples, scrub_attributes
from vczstore_dagster.store.stats import (
    remove_samples_from_stats,
    sample_counts,
    write_release_stats,
)
from vczstore_dagster.store.transaction import WIP_BRANCH_PREFIX, commit

log = logging.getLogger(__name__)
REVISION = re.compile(r"^(?P<base>.+)-r(?P<n>\d+)$")


@dataclasses.dataclass
class Redaction:
    release: str
    replaced_by: str
    snapshot_id: str
    samples_removed: int


@dataclasses.dataclass
class PurgeResult:
    redacted: list[Redaction]
    snapshots_expired: int
    chunks_deleted: int
    objects_deleted: int
    bytes_deleted: int
    cutoff: str | None
    seconds: float
    cluster: ClusterWork | None = None  # what the redactions ran on a Dask cluster


def purge(store, *, progress: bool = False, settle_seconds: float = 1.5,
          dask_scheduler=None) -> PurgeResult:
    t0 = time.perf_counter()
    if store.backend != "icechunk":
        # Plain Zarr keeps no history: a removal overwrote the only copy of each chunk.
        return PurgeResult([], 0, 0, 0, 0, None, time.perf_counter() - t0)
    repo = store.repo
    ledger = read_ledger(store.readonly_group())
    withdrawn = set(ledger.withdrawn)
    redactions = []
    with connect(dask_scheduler, lazy=True) as cluster:  # used if a release needs redacting
        for tag in sorted(repo.list_tags()) if withdrawn else []:
            redaction = _redact_if_needed(store, tag, ledger.salt, withdrawn, progress, cluster)
            if redaction is not None:
                redactions.append(redaction)
        ran = cluster.take_work() if cluster is not None else None
    if redactions:
        _record_redactions(store, redactions)
    with store.location.write_lock():
        for branch in repo.list_branches():
            if branch.startswith(WIP_BRANCH_PREFIX):
                repo.delete_branch(branch)
        # Objects written in the same second as the cutoff can survive it on some object stores.
        time.sleep(settle_seconds)
        cutoff = datetime.now(UTC)
        expired = repo.expire_snapshots(cutoff)
        summary = repo.garbage_collect(cutoff)
    log.info("expired %d snapshot(s); garbage collection deleted %d chunk(s), %d bytes",
             len(expired), summary.chunks_deleted, summary.bytes_deleted)
    objects = sum(int(getattr(summary, f, 0) or 0) for f in (
        "chunks_deleted", "manifests_deleted", "snapshots_deleted", "attributes_deleted",
        "transaction_logs_deleted"))
    return PurgeResult(
        redacted=redactions,
        snapshots_expired=len(expired),
        chunks_deleted=int(summary.chunks_deleted),
        objects_deleted=objects,
        bytes_deleted=int(summary.bytes_deleted),
        cutoff=cutoff.isoformat(timespec="seconds"),
        seconds=time.perf_counter() - t0,
        cluster=ran,
    )


def _redact_if_needed(store, tag, salt, withdrawn, progress, cluster=None) -> Redaction | None:
    import zarr

    repo = store.repo
    group = store.readonly_group(tag)
    ids = schema.strings(group["sample_id"][...])
    hits = np.array([i for i, s in enumerate(ids) if s and salted_hash(salt, s) in withdrawn],
                    dtype=np.int64)
    if len(hits) == 0:
        return None
    removed_ids = [ids[i] for i in hits]
    new_name = next_revision(tag, taken=set(repo.list_tags()))
    log.info("redacting release %s: %d withdrawn sample(s)", tag, len(hits))
    with store.location.write_lock():
        wip = WIP_BRANCH_PREFIX + uuid.uuid4().hex[:12]
        repo.create_branch(wip, repo.lookup_tag(tag))
        try:
            session = repo.writable_session(wip)
            root = zarr.open_group(session.store, mode="r+")
            stats = read_ledger(root).stats_release == tag
            counted = sample_counts(root, hits) if stats else None  # before they are blanked
            blanked = blank_samples(root, hits, progress=progress, cluster=cluster)
            scrub_attributes(root, removed_ids)
            ledger = read_ledger(root)
            note_fast_columns(ledger, blanked.fast_level_columns)
            if stats and not remove_samples_from_stats(root, counted):
                write_release_stats(root)
            ledger.withdrawn = sorted(set(ledger.withdrawn) | {salted_hash(salt, s) for s in removed_ids})
            for record in ledger.releases:
                if record.name == tag:
                    record.name, record.replaces = new_name, tag
                    record.active_samples -= len(hits)
            if ledger.stats_release == tag:
                ledger.stats_release = new_name
            write_ledger(root, ledger)
            snapshot = session.commit(
                f"redact release {tag} as {new_name}: {len(hits)} samples removed",
                metadata={"operation": "redact", "release": tag, "replaced_by": new_name,
                          "num_samples": int(len(hits))},
            )
            new_name = _create_tag(repo, new_name, snapshot)
            repo.delete_tag(tag)
        finally:
            repo.delete_branch(wip)
    return Redaction(tag, new_name, snapshot, int(len(hits)))


def next_revision(name: str, taken: set[str]) -> str:
    m = REVISION.match(name)
    base, n = (m["base"], int(m["n"])) if m else (name, 0)
    candidate = f"{base}-r{n + 1}"
    while candidate in taken:
        n += 1
        candidate = f"{base}-r{n + 1}"
    return candidate


def _create_tag(repo, name: str, snapshot: str) -> str:
    """Tag ``snapshot``; a name once deleted cannot be reused, so move on to the next revision."""
    import icechunk

    for _ in range(100):
        try:
            repo.create_tag(name, snapshot)
            return name
        except icechunk.IcechunkError:
            name = next_revision(name, taken=set(repo.list_tags()))
    raise RuntimeError(f"could not find a free tag name after {name}")


def _record_redactions(store, redactions: list[Redaction]) -> None:
    def operation(group, parent):
        ledger = read_ledger(group)
        for r in redactions:
            old = next((x for x in ledger.releases if x.name == r.release), None)
            if old is None:
                continue
            ledger.releases.append(ReleaseRecord(
                name=r.replaced_by, created_at=old.created_at,
                active_samples=old.active_samples - r.samples_removed, batches=old.batches,
                message=old.message, withdrawals_since_previous=old.withdrawals_since_previous,
                replaces=r.release,
            ))
        write_ledger(group, ledger)

    commit(store, operation, message=f"purge: {len(redactions)} release(s) redacted",
           metadata={"operation": "purge", "releases_redacted": len(redactions)})
