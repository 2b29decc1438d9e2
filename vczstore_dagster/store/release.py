"""Releases: immutable Icechunk tags on a commit that records what the release holds.

A release is all or nothing. Its commit moves ``main`` and the tag is created under the same hold
of the writer's lock; a writer killed between the two leaves the release in ``main``'s ledger
without its tag: ``list_releases`` shows it as incomplete, and running the same ``tag`` again (or
a ``purge``) tags the commit that was made for it. A release that a purge redacted is listed as
replaced, with the release that replaced it and when.
"""

from __future__ import annotations

import dataclasses
import logging
import re

import numpy as np

from vczstore_dagster.store import schema
from vczstore_dagster.store.errors import InvalidInputError
from vczstore_dagster.store.ledger import ReleaseRecord, now, read_ledger, write_ledger
from vczstore_dagster.store.stats import STATS_FIELDS, write_release_stats
from vczstore_dagster.store.transaction import commit

log = logging.getLogger(__name__)
STATS_ARRAYS = list(STATS_FIELDS)
TAG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
CITABLE, REPLACED, INCOMPLETE = "citable", "replaced", "incomplete"


@dataclasses.dataclass
class ReleaseResult:
    name: str
    snapshot_id: str
    active_samples: int
    batches: list[str]
    completed: bool = False  # an interrupted release's commit was tagged, nothing new committed


@dataclasses.dataclass
class Release:
    """A release and its state: ``citable`` (its tag is there), ``replaced`` (a purge redacted
    it into ``replaced_by`` at ``redacted_at``; no longer readable) or ``incomplete`` (its commit
    was made and its tag not: run the same ``tag`` again)."""

    name: str
    snapshot_id: str | None
    time: str  # when the release was made (a redacted revision keeps its original's)
    active_samples: int
    batches: list[str]
    message: str
    replaces: str | None = None
    state: str = CITABLE
    replaced_by: str | None = None
    redacted_at: str | None = None
    samples_redacted: int = 0
    withdrawals_since_previous: int = 0

    @property
    def citable(self) -> bool:
        return self.state == CITABLE


def active_samples(group) -> int:
    ids = schema.strings(group["sample_id"][...])
    return int(np.sum(ids != ""))


def tag_release(store, name: str, *, message: str | None = None) -> ReleaseResult:
    """Record the release in the store, commit, and tag that commit ``name``; or, when a ``tag``
    of the same name was interrupted after its commit, tag that commit."""
    if store.backend != "icechunk":
        raise InvalidInputError(f"{store.url}: releases need an Icechunk store (plain Zarr has no tags)")
    if not TAG_NAME.match(name or ""):
        raise InvalidInputError(
            f"release name {name!r} is not usable: letters, digits, '.', '_' or '-', at most 100"
        )
    repo = store.repo
    with store.location.write_lock("release"):
        if name in repo.list_tags():
            raise InvalidInputError(f"{store.url}: release {name} already exists (tags are immutable)")
        known = next((r for r in list_releases(store) if r.name == name), None)
        if known is not None and known.state == REPLACED:
            raise InvalidInputError(f"{store.url}: release {name} was replaced by "
                                    f"{known.replaced_by} when it was redacted; tag names cannot "
                                    "be reused")
        if known is not None and known.snapshot_id is not None:
            create_tag(store, name, known.snapshot_id)
            log.warning("release %s: its commit was made on %s but the tag was not (the writer "
                        "was interrupted); tagged that commit now", name, known.time)
            return ReleaseResult(name, known.snapshot_id, known.active_samples, known.batches,
                                 completed=True)
        if known is not None:
            log.warning("release %s: interrupted before its tag, and its commit is no longer in "
                        "the history; making the release again from main", name)

        def operation(group, parent):
            ledger = read_ledger(group)
            if ledger.release(name) is not None:
                if known is None:  # another writer made it meanwhile (S3)
                    raise InvalidInputError(f"{store.url}: release {name} was made meanwhile; "
                                            "tag names cannot be reused")
                ledger.releases.remove(ledger.release(name))
            previous_withdrawals = sum(r.withdrawals_since_previous for r in ledger.releases)
            record = ReleaseRecord(
                name=name,
                created_at=now(),
                active_samples=active_samples(group),
                batches=ledger.batch_ids(),
                message=message or "",
                withdrawals_since_previous=max(0, ledger.withdrawals - previous_withdrawals),
            )
            ledger.releases.append(record)
            fields = write_release_stats(group)
            ledger.stats_release = name
            ledger.stale_info_fields = [f for f in ledger.stale_info_fields if f not in fields]
            write_ledger(group, ledger)
            return record

        done = commit(store, operation, message=f"release {name}",
                      metadata={"operation": "release", "release": name},
                      published=lambda snapshot: create_tag(store, name, snapshot))
    record = done.result
    return ReleaseResult(name, done.snapshot_id, record.active_samples, record.batches)


def create_tag(store, name: str, snapshot: str) -> None:
    """Tag ``snapshot`` as release ``name``; done already (by a writer that raced us) is fine."""
    import icechunk

    try:
        store.repo.create_tag(name, snapshot)
    except icechunk.IcechunkError as exc:
        if name in store.repo.list_tags() and store.repo.lookup_tag(name) == snapshot:
            return
        raise InvalidInputError(
            f"{store.url}: could not tag release {name}: {str(exc).splitlines()[0]} (a tag name "
            "once deleted can never be used again)") from exc


def release_commit(repo, name: str) -> str | None:
    """The commit made for release ``name`` on main, if it is still in main's history."""
    for info in repo.ancestry(branch="main"):
        meta = info.metadata or {}
        if meta.get("operation") == "release" and meta.get("release") == name:
            return info.id
    return None


def list_releases(store) -> list[Release]:
    """Every release: the tags (citable, or replaced when a redacted copy is tagged too), and the
    releases ``main``'s ledger remembers without a tag (replaced, or incomplete)."""
    if store.backend != "icechunk":
        return []
    repo = store.repo
    out: dict[str, Release] = {}
    successors: dict[str, str] = {}
    for tag in repo.list_tags():
        group = store.readonly_group(tag)
        ledger = read_ledger(group)
        record = ledger.release(tag)
        if record is None:  # a tag made outside vczstore
            out[tag] = Release(tag, repo.lookup_tag(tag), "", active_samples(group),
                               ledger.batch_ids(), "")
            continue
        out[tag] = _release(record, repo.lookup_tag(tag), CITABLE)
        if record.replaces:
            successors[record.replaces] = tag
    head = read_ledger(store.readonly_group())
    for record in head.releases:
        if record.name not in out:
            replaced_by = head.replaced_by(record.name) or successors.get(record.name)
            if replaced_by is None:
                out[record.name] = _release(record, release_commit(repo, record.name), INCOMPLETE)
            else:
                out[record.name] = _release(record, None, REPLACED)
                successors[record.name] = replaced_by
    for old, new in successors.items():
        if old in out:  # replaced, even while its tag is still there (a purge interrupted)
            release = out[old]
            release.state, release.replaced_by = REPLACED, new
            release.redacted_at = out[new].redacted_at if new in out else release.redacted_at
    return sorted(out.values(), key=lambda r: (r.time, r.name))


def _release(record: ReleaseRecord, snapshot: str | None, state: str) -> Release:
    return Release(
        name=record.name, snapshot_id=snapshot, time=record.created_at,
        active_samples=record.active_samples, batches=record.batches, message=record.message,
        replaces=record.replaces, state=state, replaced_by=record.replaced_by,
        redacted_at=record.redacted_at, samples_redacted=record.samples_redacted,
        withdrawals_since_previous=record.withdrawals_since_previous,
    )


def release_notes(store, name: str) -> str:
    """A Markdown summary of a release and what changed since the one before it (no sample IDs).
    A replaced release's notes say what replaced it."""
    releases = {r.name: r for r in list_releases(store)}
    if name not in releases:
        raise InvalidInputError(f"{store.url}: no release called {name!r}")
    release = releases[name]
    if release.state != CITABLE:
        return _notes_not_citable(store, release)
    ledger = read_ledger(store.readonly_group(name))
    record = ledger.release(name)
    earlier = [r for r in ledger.releases if r.name != name and r.created_at <= record.created_at]
    previous = earlier[-1] if earlier else None
    batches = {b.batch_id: b for b in ledger.batches}
    new_batches = [b for b in record.batches if previous is None or b not in previous.batches]
    lines = [f"# Release {name}", ""]
    if record.replaces:
        lines += [f"Redacted revision of release **{record.replaces}**, made on "
                  f"{record.redacted_at or 'an unrecorded date'}: {record.samples_redacted} "
                  f"sample(s) whose consent was withdrawn after {record.replaces} was made were "
                  f"removed, and its statistics recomputed. Cite {name}, not {record.replaces}.",
                  ""]
    lines += [f"- Snapshot: `{release.snapshot_id}`", f"- Created: {record.created_at}"
              + (f" (as release {_original(releases, name)})" if record.replaces else "")]
    if record.replaces:
        lines.append(f"- Redacted: {record.redacted_at or 'date not recorded'}")
    lines += [
        f"- Active samples: {record.active_samples}",
        f"- Batches: {len(record.batches)}",
        f"- Per-variant statistics recomputed for this release: {', '.join(STATS_ARRAYS)}",
    ]
    if record.message:
        lines += ["", record.message]
    lines += ["", f"## Since {previous.name if previous else 'the store was created'}", ""]
    if new_batches:
        for b in new_batches:
            n = batches[b].num_samples if b in batches else "?"
            lines.append(f"- Batch {b} appended: {n} samples")
    else:
        lines.append("- No batches appended")
    before = record.withdrawals_since_previous
    if record.replaces:
        lines.append(f"- Withdrawals applied: {before + record.samples_redacted} sample(s) "
                     f"({before} before the release was made, {record.samples_redacted} removed "
                     "when it was redacted)")
    else:
        lines.append(f"- Withdrawals applied: {before} sample(s)")
    redactions = [r for r in releases.values() if r.replaces]
    if redactions:
        lines += ["", "## Redactions", ""]
        lines += [f"- {r.replaces} was replaced by {r.name}"
                  + (f" on {r.redacted_at}" if r.redacted_at else "") for r in redactions]
    return "\n".join(lines) + "\n"


def _original(releases: dict[str, Release], name: str) -> str:
    """The first release of a chain of redactions (``2026-11`` for ``2026-11-r2``)."""
    seen = {name}
    while releases.get(name) and releases[name].replaces and releases[name].replaces not in seen:
        name = releases[name].replaces
        seen.add(name)
    return name


def _notes_not_citable(store, release: Release) -> str:
    if release.state == REPLACED:
        what = (f"Replaced by **{release.replaced_by}**"
                + (f" on {release.redacted_at}" if release.redacted_at else "")
                + ": samples whose consent was withdrawn after it was made were removed. This "
                f"release can no longer be read or cited; cite {release.replaced_by}.")
    else:
        what = (f"Incomplete: its commit was made but its tag was not (the writer was "
                f"interrupted). Run `vczstore tag {store.url} {release.name}` to complete it.")
    return "\n".join([f"# Release {release.name} ({release.state})", "", what, "",
                      f"- Created: {release.time}",
                      f"- Active samples when made: {release.active_samples}",
                      f"- Batches: {len(release.batches)}"]) + "\n"
