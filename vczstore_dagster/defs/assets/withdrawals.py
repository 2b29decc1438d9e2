"""``sample_withdrawals[W]``: consent withdrawn for the samples listed in request W.

The request file (``W.txt`` in the withdrawals folder, one sample ID per line) is read here, at
run time, so that no sample ID passes through run config, tags, logs or metadata: they report
counts only.
"""

import time

import dagster as dg

from vczstore_dagster.defs.assets import GROUP
from vczstore_dagster.defs.assets.store import POOL, cluster_metadata, vcz_store
from vczstore_dagster.defs.partitions import withdrawals
from vczstore_dagster.defs.privacy import call_engine
from vczstore_dagster.defs.resources import VczStoreResource, WithdrawalsResource
from vczstore_dagster.store.purge import purge
from vczstore_dagster.store.remove import parse_sample_list, remove_samples

REQUEST_SUFFIX = ".txt"


@dg.asset(
    partitions_def=withdrawals,
    group_name=GROUP,
    deps=[dg.AssetDep(vcz_store, partition_mapping=dg.AllPartitionMapping())],
    pool=POOL,
    kinds={"icechunk"},
    description=(
        "Request W carried out: its samples removed from main (IDs hidden, genotypes missing), "
        "releases that held them redacted, and history purged so nothing keeps their data."
    ),
)
def sample_withdrawals(
    context: dg.AssetExecutionContext, store: VczStoreResource, withdrawals: WithdrawalsResource
) -> dg.MaterializeResult:
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
    redacted = [f"{r.release} → {r.replaced_by}" for r in purged.redacted]
    return dg.MaterializeResult(
        metadata={
            "samples_requested": len(sample_ids),
            "samples_removed": removed.num_removed,
            "withdrawn_total": removed.withdrawn_total,
            "snapshot_id": removed.snapshot_id or "",
            "chunk_columns_rewritten": removed.columns_rewritten,
            "chunks_rewritten": removed.chunks_rewritten,
            "attributes_scrubbed": removed.attributes_scrubbed,
            "releases_redacted": len(redacted),
            "redactions": dg.MetadataValue.text(", ".join(redacted) or "none"),
            "snapshots_expired": purged.snapshots_expired,
            "objects_deleted": purged.objects_deleted,
            "bytes_deleted": dg.MetadataValue.int(purged.bytes_deleted),
            "duration_seconds": round(time.perf_counter() - started, 3),
            **cluster_metadata(removed.cluster),
        }
    )
