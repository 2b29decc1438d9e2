"""``store_summary``: the store as a whole (samples, batches, releases and their state, bytes, last
commit), from the engine's ``store_info``. Every writer records it after its write, so Dagster
plots its numbers over time; materializing the asset itself reads it afresh.

It has no upstream edges in the asset graph on purpose: its materializations are recorded by the
writers' steps without Dagster's data-version provenance, and an edge would make the UI call it
"unsynced" after every write it records."""


import datetime

import dagster as dg

from vczstore_dagster.defs.assets import GROUP, OWNERS
from vczstore_dagster.defs.privacy import call_engine
from vczstore_dagster.defs.resources import VczStoreResource
from vczstore_dagster.store import store_info
from vczstore_dagster.store.ledger import read_ledger
from vczstore_dagster.store.release import CITABLE, INCOMPLETE, REPLACED

STORE_SUMMARY = "store_summary"
RELEASE_COLUMNS = [("release", "string"), ("state", "string"), ("replaced_by", "string"),
                   ("created", "string"), ("active_samples", "int"), ("batches", "int")]


def _epoch(iso: str | None) -> float | None:
    return datetime.datetime.fromisoformat(iso).timestamp() if iso else None


def summary_metadata(opened) -> dict:
    """Numbers Dagster plots (samples, batches, releases by state, bytes) and what they describe."""
    info = call_engine("reading the store", store_info, opened)
    withdrawn = len(read_ledger(opened.readonly_group()).withdrawn)
    states = [r.state for r in info.releases]
    rows = [dg.TableRecord({"release": r.name, "state": r.state, "replaced_by": r.replaced_by or "",
                            "created": r.time, "active_samples": r.active_samples,
                            "batches": len(r.batches)}) for r in info.releases]
    metadata = {
        "total_samples": info.num_samples,
        "active_samples": info.num_active_samples,
        "withdrawn_samples": withdrawn,
        "num_variants": info.num_variants,
        "batches": len(info.batches),
        "releases": len(info.releases),
        "releases_citable": states.count(CITABLE),
        "releases_replaced": states.count(REPLACED),
        "releases_incomplete": states.count(INCOMPLETE),
        "citable_releases": dg.MetadataValue.text(
            ", ".join(r.name for r in info.releases if r.citable) or "none"),
        "release_states": dg.MetadataValue.table(rows, schema=dg.TableSchema(
            columns=[dg.TableColumn(n, t) for n, t in RELEASE_COLUMNS])),
        "snapshot_id": info.snapshot_id or "",
        "last_commit": info.last_commit_message or "",
        "backend": info.backend,
        "url": info.url,
    }
    if info.bytes is not None:
        metadata["bytes"] = dg.MetadataValue.int(info.bytes)
    fast = info.fast_level
    metadata["fast_level_columns"] = len(fast.columns) if fast else 0
    if fast and fast.extra_bytes is not None:
        metadata["fast_level_extra_bytes"] = dg.MetadataValue.int(fast.extra_bytes)
    if info.last_commit_time:
        metadata["last_commit_time"] = dg.MetadataValue.timestamp(_epoch(info.last_commit_time))
    return metadata


def summary_event(opened, after: str) -> dg.AssetMaterialization:
    """``store_summary``'s materialization, recorded by a writer right after its write."""
    return dg.AssetMaterialization(asset_key=STORE_SUMMARY, metadata=summary_metadata(opened),
                                   description=f"After {after}")


def record_summary(context, store: VczStoreResource, after: str) -> None:
    """Log ``store_summary`` from inside a writer's step; a failure to read is only a warning (the
    write is done)."""
    try:
        context.log_event(summary_event(store.open(), after))
    except Exception as exc:  # noqa: BLE001 - the summary must never fail a write that succeeded
        context.log.warning(f"store_summary not recorded: {type(exc).__name__}")


@dg.asset(
    name=STORE_SUMMARY,
    group_name=GROUP,
    kinds={"icechunk"},
    owners=OWNERS,
    tags={"layer": "store"},
    description=(
        "The store as a whole: total and active samples, withdrawn samples, batches, releases by "
        "state (citable, replaced, incomplete), bytes, last snapshot and commit time. Recorded "
        "after every write (append, withdrawal, purge, release, widen); the Plots tab shows "
        "the numbers over time. Materialize it to read the store afresh."
    ),
)
def store_summary(context: dg.AssetExecutionContext, store: VczStoreResource) -> dg.MaterializeResult:
    opened = call_engine("opening the store", store.open)
    return dg.MaterializeResult(metadata=summary_metadata(opened))
