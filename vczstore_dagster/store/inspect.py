"""What is in a store, at its head or at any release or snapshot."""

from __future__ import annotations

import dataclasses

from vczstore_dagster.store import schema
from vczstore_dagster.store.ledger import BatchRecord, read_ledger
from vczstore_dagster.store.location import storage_error
from vczstore_dagster.store.recompress import FastLevelReport, fast_level_report
from vczstore_dagster.store.release import Release, active_samples, list_releases


@dataclasses.dataclass
class StoreInfo:
    url: str
    backend: str
    ref: str
    snapshot_id: str | None
    zarr_format: int
    num_variants: int
    num_samples: int
    num_active_samples: int
    samples_chunk_size: int
    variants_chunk_size: int
    arrays: list[str]
    bytes: int | None
    batches: list[BatchRecord]
    releases: list[Release]  # every release of the store, citable or not, whatever ``ref``
    stale_info_fields: list[str]
    last_commit_message: str | None
    last_commit_time: str | None
    fast_level: FastLevelReport | None = None  # chunk columns written at the fast level


def store_info(store, at: str | None = None) -> StoreInfo:
    """What the store holds at ``at``; a damaged repository file is named (StoreDamagedError)."""
    if store.backend != "icechunk":
        return _store_info(store, at)
    import icechunk

    try:
        return _store_info(store, at)
    except icechunk.IcechunkError as exc:
        raise storage_error(store.location, exc) from exc


def _store_info(store, at: str | None) -> StoreInfo:
    group = store.readonly_group(at)
    ledger = read_ledger(group)
    snapshot = message = when = None
    size = None
    if store.backend == "icechunk":
        session = store.readonly_session(at)
        snapshot = session.snapshot_id
        info = next(iter(store.repo.ancestry(snapshot_id=snapshot)))
        message, when = info.message, info.written_at.isoformat(timespec="seconds")
        try:
            size = int(store.repo.chunk_storage_stats().native_bytes)
        except Exception:  # older repositories or storages without listing
            size = None
    return StoreInfo(
        url=store.url,
        backend=store.backend,
        ref=at or "main",
        snapshot_id=snapshot,
        zarr_format=schema.zarr_format(group),
        num_variants=schema.num_variants(group),
        num_samples=schema.num_samples(group),
        num_active_samples=active_samples(group),
        samples_chunk_size=schema.samples_chunk_size(group),
        variants_chunk_size=schema.variants_chunk_size(group),
        arrays=sorted(name for name, _ in group.arrays()),
        bytes=size,
        batches=ledger.batches,
        releases=list_releases(store),
        stale_info_fields=ledger.stale_info_fields,
        last_commit_message=message,
        last_commit_time=when,
        fast_level=fast_level_report(group, ledger.fast_level_columns),
    )


@dataclasses.dataclass
class SampleAxisAudit:
    """Main read again: the arrays whose sample axis is not the store's sample count."""

    snapshot_id: str | None
    num_samples: int
    num_arrays: int
    mismatched: dict[str, int]

    @property
    def passed(self) -> bool:
        return not self.mismatched


def audit_sample_axis(store) -> SampleAxisAudit:
    """What an append's audit checks first, on main as it stands: every sample array holds
    ``sample_id``'s count of samples."""
    group = store.readonly_group()
    expected = schema.num_samples(group)
    arrays = schema.sample_arrays(group)
    mismatched = {name: int(array.shape[schema.sample_axis(array)]) for name, array in arrays.items()
                  if array.shape[schema.sample_axis(array)] != expected}
    snapshot = store.readonly_session().snapshot_id if store.backend == "icechunk" else None
    return SampleAxisAudit(snapshot, expected, len(arrays), mismatched)
