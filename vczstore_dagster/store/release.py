"""Releases: immutable Icechunk tags on a commit that records what the release holds."""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from vczstore_dagster.store import schema
from vczstore_dagster.store.errors import InvalidInputError
from vczstore_dagster.store.ledger import ReleaseRecord, now, read_ledger, write_ledger
from vczstore_dagster.store.stats import STATS_FIELDS, write_release_stats
from vczstore_dagster.store.transaction import commit

STATS_ARRAYS = list(STATS_FIELDS)
TAG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclasses.dataclass
class ReleaseResult:
    name: str
    snapshot_id: str
    active_samples: int
    batches: list[str]


@dataclasses.dataclass
class Release:
    name: str
    snapshot_id: str
    time: str
    active_samples: int
    batches: list[str]
    message: str
    replaces: str | None = None


def active_samples(group) -> int:
    ids = schema.strings(group["sample_id"][...])
    return int(np.sum(ids != ""))


def tag_release(store, name: str, *, message: str | None = None) -> ReleaseResult:
    """Record the release in the store, commit, and tag that commit ``name``."""
    if store.backend != "icechunk":
        raise InvalidInputError(f"{store.url}: releases need an Icechunk store (plain Zarr has no tags)")
    if not TAG_NAME.match(name or ""):
        raise InvalidInputError(
            f"release name {name!r} is not usable: letters, digits, '.', '_' or '-', at most 100"
        )
    if name in store.repo.list_tags():
        raise InvalidInputError(f"{store.url}: release {name} already exists (tags are immutable)")

    def operation(group, parent):
        ledger = read_ledger(group)
        if any(r.name == name for r in ledger.releases):
            raise InvalidInputError(f"{store.url}: release {name} was made before; tag names cannot be reused")
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
                  metadata={"operation": "release", "release": name})
    store.repo.create_tag(name, done.snapshot_id)
    record = done.result
    return ReleaseResult(name, done.snapshot_id, record.active_samples, record.batches)


def list_releases(store) -> list[Release]:
    if store.backend != "icechunk":
        return []
    out = []
    for tag in store.repo.list_tags():
        snapshot = store.repo.lookup_tag(tag)
        group = store.readonly_group(tag)
        ledger = read_ledger(group)
        record = next((r for r in ledger.releases if r.name == tag), None)
        if record is None:  # a tag made outside vczstore
            out.append(Release(tag, snapshot, "", active_samples(group), ledger.batch_ids(), ""))
            continue
        out.append(Release(tag, snapshot, record.created_at, record.active_samples, record.batches,
                           record.message, record.replaces))
    return sorted(out, key=lambda r: (r.time, r.name))


def release_notes(store, name: str) -> str:
    """A Markdown summary of a release and what changed since the one before it (no sample IDs)."""
    releases = {r.name: r for r in list_releases(store)}
    if name not in releases:
        raise InvalidInputError(f"{store.url}: no release called {name!r}")
    ledger = read_ledger(store.readonly_group(name))
    record = next(r for r in ledger.releases if r.name == name)
    earlier = [r for r in ledger.releases if r.name != name and r.created_at <= record.created_at]
    previous = earlier[-1] if earlier else None
    batches = {b.batch_id: b for b in ledger.batches}
    new_batches = [b for b in record.batches if previous is None or b not in previous.batches]
    lines = [f"# Release {name}", ""]
    if record.replaces:
        lines += [f"Redacted revision of release **{record.replaces}**: samples whose consent was "
                  "withdrawn after it was made were removed, and its statistics recomputed.", ""]
    lines += [
        f"- Snapshot: `{releases[name].snapshot_id}`",
        f"- Created: {record.created_at}",
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
    lines.append(f"- Withdrawals applied: {record.withdrawals_since_previous} sample(s)")
    redactions = [r for r in releases.values() if r.replaces]
    if redactions:
        lines += ["", "## Redactions", ""]
        lines += [f"- {r.replaces} was replaced by {r.name}" for r in redactions]
    return "\n".join(lines) + "\n"
