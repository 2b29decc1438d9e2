"""``sample_withdrawals[W]``: consent withdrawn for the samples listed in request W.

The request file (``W.txt`` in the withdrawals folder, one sample ID per line) is read here, at
run time, so that no sample ID passes through run config, tags, logs or metadata: they report
counts only. Once carried out, the request file is replaced by a receipt (``W.receipt.json``:
counts, the samples' salted hashes as the store's withdrawn registry keeps them, time, snapshot),
and batches in the inbox or staging area that still hold a withdrawn sample are deleted.
"""

import json
import time

import dagster as dg

from vczstore_dagster.defs.assets import GROUP, OWNERS
from vczstore_dagster.defs.assets.releases import record_releases
from vczstore_dagster.defs.assets.store import POOL, cluster_metadata, vcz_store
from vczstore_dagster.defs.assets.summary import record_summary
from vczstore_dagster.defs.cleanup import leftover_batches
from vczstore_dagster.defs.partitions import withdrawals
from vczstore_dagster.defs.privacy import call_engine
from vczstore_dagster.defs.resources import (
    InboxResource,
    StagingResource,
    VczStoreResource,
    WithdrawalsResource,
)
from vczstore_dagster.store.ledger import now, read_ledger
from vczstore_dagster.store.purge import purge
from vczstore_dagster.store.remove import parse_sample_list, remove_samples

REQUEST_SUFFIX = ".txt"
RECEIPT_SUFFIX = ".receipt.json"


def purge_metadata(purged) -> dict:
    redacted = [f"{r.release} → {r.replaced_by}" for r in purged.redacted]
    return {
        "releases_redacted": len(redacted),
        "redactions": dg.MetadataValue.text(", ".join(redacted) or "none"),
        "snapshots_expired": purged.snapshots_expired,
        "objects_deleted": purged.objects_deleted,
        "bytes_deleted": dg.MetadataValue.int(purged.bytes_deleted),
    }


def record_redactions(context, opened, purged) -> None:
    """Both sides of every redaction: ``store_release[R]`` replaced, ``store_release[R-r1]`` made."""
    names = [n for r in purged.redacted for n in (r.release, r.replaced_by)]
    names += purged.releases_completed
    if names:
        record_releases(context, opened, names)


def _receipt(request: str, sample_ids, opened, removed, purged, run_id: str) -> bytes:
    ledger = read_ledger(opened.readonly_group())
    return json.dumps({
        "request": request,
        "processed_at": now(),
        "run_id": run_id,
        "snapshot_id": removed.snapshot_id,
        "samples_requested": len(sample_ids),
        "samples_removed": removed.num_removed,
        "withdrawn_total": removed.withdrawn_total,
        "sample_hashes": sorted(ledger.hash_sample(s) for s in sample_ids),
        "sample_hashes_are": "the store's withdrawn registry: sha256 of '<salt>:<sample ID>', "
                             "first 32 hex digits, with the store's own salt",
        "releases_redacted": {r.release: r.replaced_by for r in purged.redacted},
    }, indent=2).encode()


@dg.asset(
    partitions_def=withdrawals,
    group_name=GROUP,
    deps=[dg.AssetDep(vcz_store, partition_mapping=dg.AllPartitionMapping())],
    pool=POOL,
    kinds={"icechunk"},
    owners=OWNERS,
    tags={"layer": "store", "writes": "store"},
    description=(
        "Request W carried out: its samples removed from main (IDs hidden, genotypes missing), "
        "releases that held them redacted (R → R-r1, recorded on store_release), and history "
        "purged so nothing keeps their data. The request file is then replaced by a receipt "
        "without IDs, and batches in the inbox or staging area holding a withdrawn sample are "
        "deleted."
    ),
)
def sample_withdrawals(
    context: dg.AssetExecutionContext, store: VczStoreResource, withdrawals: WithdrawalsResource,
    inbox: InboxResource, staging: StagingResource,
):
    request = context.partition_key
    raw = withdrawals.read_bytes(request + REQUEST_SUFFIX)
    sample_ids = parse_sample_list(raw.decode("utf-8", errors="replace"))
    if not sample_ids:
        raise dg.Failure(f"withdrawal request {request} lists no sample ID")
    started = time.perf_counter()
    opened = call_engine("opening the store", store.open, sample_ids=sample_ids)
    removed = call_engine(
        "removing the samples", remove_samples, opened, sample_ids,
        dask_scheduler=store.dask_scheduler, sample_ids=sample_ids,
    )
    purged = call_engine("purging history", purge, opened, dask_scheduler=store.dask_scheduler,
                         sample_ids=sample_ids)
    record_redactions(context, opened, purged)
    leftovers = leftover_batches(context, opened, inbox, staging, delete=True)
    withdrawals.write_bytes(_receipt(request, sample_ids, opened, removed, purged, context.run_id),
                            request + RECEIPT_SUFFIX)
    withdrawals.delete(request + REQUEST_SUFFIX)
    yield dg.MaterializeResult(
        metadata={
            "samples_requested": len(sample_ids),
            "samples_removed": removed.num_removed,
            "withdrawn_total": removed.withdrawn_total,
            "snapshot_id": removed.snapshot_id or "",
            "chunk_columns_rewritten": removed.columns_rewritten,
            "chunks_rewritten": removed.chunks_rewritten,
            "attributes_scrubbed": removed.attributes_scrubbed,
            **purge_metadata(purged),
            **leftovers,
            "receipt": withdrawals.path(request + RECEIPT_SUFFIX),
            "duration_seconds": round(time.perf_counter() - started, 3),
            **cluster_metadata(removed.cluster),
        }
    )
    record_summary(context, store, f"withdrawal {request} was carried out")
