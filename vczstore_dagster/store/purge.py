"""Make the store forget withdrawn samples: redact the releases that still hold them, then expire
history and garbage-collect, so that no object in storage keeps their data.

Icechunk never forgets through ``amend``: every snapshot since a chunk was written references it.
A release tag keeps its snapshot (and so the sample's chunks) alive, and a deleted tag's name can
never be reused, so a redacted release is re-tagged with the next revision suffix (``2026-11`` →
``2026-11-r1``).

A purge can be killed at any point and run again: a release whose redacted copy is tagged already
is only deleted, and ``main``'s ledger is brought up to date from the tags. On a local store the
purge holds the writer's lock throughout. On S3 writers run beside it: the garbage-collection
cutoff is taken first, the temporary branches of writers in flight at that moment are waited for
(a branch older than the grace period belongs to a writer that died and is deleted), and objects
written after the cutoff are never collected.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from datetime import UTC, datetime, timedelta

import numpy as np

from vczstore_dagster.store import schema
from vczstore_dagster.store.cluster import ClusterWork, connect
from vczstore_dagster.store.ledger import now, read_ledger, salted_hash, write_ledger
from vczstore_dagster.store.lock import seconds_setting
from vczstore_dagster.store.recompress import note_fast_columns
from vczstore_dagster.store.release import INCOMPLETE, create_tag, list_releases
from vczstore_dagster.store.remove import blank_samples, scrub_attributes
from vczstore_dagster.store.stats import (
    remove_samples_from_stats,
    sample_counts,
    write_release_stats,
)
from vczstore_dagster.store.transaction import (
    WIP_BRANCH_PREFIX,
    commit,
    pause_for_tests,
    wip_branch_created,
    wip_branch_name,
)

log = logging.getLogger(__name__)
REVISION = re.compile(r"^(?P<base>.+)-r(?P<n>\d+)$")
GRACE_ENV = "VCZSTORE_PURGE_GRACE_SECONDS"
DEFAULT_GRACE_SECONDS = 3600.0


@dataclasses.dataclass
class Redaction:
    release: str
    replaced_by: str
    snapshot_id: str
    samples_removed: int
    resumed: bool = False  # tagged by an interrupted purge; this one only deleted the old tag


@dataclasses.dataclass
class PurgeResult:
    redacted: list[Redaction]
    snapshots_expired: int
    chunks_deleted: int
    objects_deleted: int
    bytes_deleted: int
    cutoff: str | None
    seconds: float
    releases_completed: list[str] = dataclasses.field(default_factory=list)
    writers_waited_for: int = 0
    abandoned_branches_deleted: int = 0
    cluster: ClusterWork | None = None  # what the redactions ran on a Dask cluster


def purge_grace(seconds: float | None = None) -> float:
    """How long a writer may run beside a purge on S3: ``seconds``, else
    ``VCZSTORE_PURGE_GRACE_SECONDS``, else an hour."""
    return seconds_setting(seconds, GRACE_ENV, DEFAULT_GRACE_SECONDS)


def purge(store, *, progress: bool = False, grace_seconds: float | None = None,
          dask_scheduler=None) -> PurgeResult:
    t0 = time.perf_counter()
    if store.backend != "icechunk":
        # Plain Zarr keeps no history: a removal overwrote the only copy of each chunk.
        return PurgeResult([], 0, 0, 0, 0, None, time.perf_counter() - t0)
    grace = purge_grace(grace_seconds)
    repo = store.repo
    with store.location.write_lock("purge"):
        completed = _complete_releases(store)
        ledger = read_ledger(store.readonly_group())
        with connect(dask_scheduler, lazy=True) as cluster:  # used if a release needs redacting
            redactions = _redact_releases(store, ledger, progress, cluster) if ledger.withdrawn else []
            ran = cluster.take_work() if cluster is not None else None
        _record_redactions(store)
        cutoff = _cutoff(repo)
        waited, abandoned = _settle_writers(store, grace)
        pause_for_tests("collect")
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
        releases_completed=completed,
        writers_waited_for=waited,
        abandoned_branches_deleted=abandoned,
        cluster=ran,
    )


def _complete_releases(store) -> list[str]:
    """Tag the commits of releases whose ``tag`` was interrupted, before history expires them."""
    done = []
    for release in list_releases(store):
        if release.state != INCOMPLETE:
            continue
        if release.snapshot_id is None:
            log.warning("release %s was interrupted before its tag and its commit is no longer "
                        "in the history: run `vczstore tag` with that name again to make it",
                        release.name)
            continue
        create_tag(store, release.name, release.snapshot_id)
        log.warning("release %s: tagged the commit an interrupted `tag` made for it", release.name)
        done.append(release.name)
    return done


def _redact_releases(store, ledger, progress, cluster=None) -> list[Redaction]:
    """Redact every release that holds a withdrawn sample; finish a redaction an interrupted
    purge tagged already (its old tag is still there) instead of making another."""
    repo = store.repo
    tags = sorted(repo.list_tags())
    records = {tag: read_ledger(store.readonly_group(tag)).release(tag) for tag in tags}
    successors = {r.replaces: r for r in records.values() if r is not None and r.replaces}
    withdrawn = set(ledger.withdrawn)
    out = []
    for tag in tags:
        new = successors.get(tag)
        if new is not None:
            log.warning("release %s was redacted as %s by an interrupted purge; deleting %s",
                        tag, new.name, tag)
            repo.delete_tag(tag)
            before = records[tag].samples_redacted if records[tag] is not None else 0
            out.append(Redaction(tag, new.name, repo.lookup_tag(new.name),
                                 new.samples_redacted - before, resumed=True))
            continue
        redaction = _redact_if_needed(store, tag, ledger.salt, withdrawn, progress, cluster)
        if redaction is not None:
            out.append(redaction)
    return out


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
    wip = wip_branch_name()
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
                record.redacted_at = now()
                record.samples_redacted += len(hits)
        if ledger.stats_release == tag:
            ledger.stats_release = new_name
        write_ledger(root, ledger)
        snapshot = session.commit(
            f"redact release {tag} as {new_name}: {len(hits)} samples removed",
            metadata={"operation": "redact", "release": tag, "replaced_by": new_name,
                      "num_samples": int(len(hits))},
        )
        new_name = _create_tag(repo, new_name, snapshot)
        pause_for_tests("redacted")
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


def _record_redactions(store) -> None:
    """Bring ``main``'s ledger up to date with the redacted releases the tags hold: the old
    release marked replaced (by what, when), the new one listed. Nothing to do, no commit."""
    repo = store.repo
    redacted = {}
    for tag in repo.list_tags():
        record = read_ledger(store.readonly_group(tag)).release(tag)
        if record is not None and record.replaces:
            redacted[record.replaces] = record
    head = read_ledger(store.readonly_group())
    if all(_recorded(head, old, new) for old, new in redacted.items()):
        return

    def operation(group, parent):
        ledger = read_ledger(group)
        for old, new in redacted.items():
            replaced = ledger.release(old)
            if replaced is not None:
                replaced.replaced_by, replaced.redacted_at = new.name, new.redacted_at
            if ledger.release(new.name) is None:
                ledger.releases.append(dataclasses.replace(new))
        write_ledger(group, ledger)

    todo = sum(not _recorded(head, old, new) for old, new in redacted.items())
    commit(store, operation, message=f"purge: {todo} release(s) redacted",
           metadata={"operation": "purge", "releases_redacted": todo})


def _recorded(ledger, old: str, new) -> bool:
    replaced = ledger.release(old)
    return ledger.release(new.name) is not None and (
        replaced is None or replaced.replaced_by == new.name)


def _cutoff(repo) -> datetime:
    """The garbage-collection cutoff: after every snapshot main has now (so the withdrawn
    samples' snapshots expire), in whole seconds less one, because object stores keep whole-
    second times and an object written just after the cutoff must never look older."""
    tip = repo.lookup_snapshot(repo.lookup_branch("main")).written_at
    while True:
        cutoff = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
        if cutoff > tip:
            return cutoff
        time.sleep(0.1)


def _settle_writers(store, grace: float) -> tuple[int, int]:
    """Wait for the writers in flight now to finish; delete the temporary branches of writers
    that died (on a local store every one: the purge holds the writer's lock; on S3 those older
    than ``grace`` seconds). Returns (writers waited for, branches deleted)."""
    import icechunk

    repo = store.repo
    pending = {b for b in repo.list_branches() if b.startswith(WIP_BRANCH_PREFIX)}
    waited = deleted = 0
    announced = False
    while pending:
        moment = datetime.now(UTC)
        for branch in sorted(pending):
            created = wip_branch_created(branch)
            if store.location.is_local or created is None or (
                    moment - created).total_seconds() > grace:
                try:
                    repo.delete_branch(branch)
                    deleted += 1
                    log.warning("deleted temporary branch %s: its writer died (started %s)",
                                branch, created.isoformat(timespec="seconds") if created else
                                "before branch times were recorded")
                except icechunk.IcechunkError:
                    pass  # it finished meanwhile
                pending.discard(branch)
        live = pending & repo.list_branches()
        waited += len(pending - live)
        pending = live
        if pending:
            if not announced:
                announced = True
                oldest = min(wip_branch_created(b) for b in pending)
                log.warning("waiting for %d writer(s) in flight (the oldest started %s) before "
                            "collecting garbage; a writer running longer than %g s is taken "
                            "for dead", len(pending), oldest.isoformat(timespec="seconds"), grace)
            time.sleep(0.5)
    return waited, deleted
