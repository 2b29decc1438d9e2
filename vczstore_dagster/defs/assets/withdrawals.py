"""``sample_withdrawals[W]``: consent withdrawn for the samples listed in request W.

The request file (``W.txt`` in the withdrawals folder, one sample ID per line) is read here, at
run time, so that no sample ID passes through run config, tags, logs or metadata: they report
counts only.
"""


import time

import dagster as dg

from vczstore_dagster.defs.assets.store import POOL, vcz_store
from vczstore_dagster.defs.partitions import withdrawals
from vczstore_dagster.defs.privacy import call_engine
from vczstore_dagster.defs.resources import VczStoreResource, WithdrawalsResource

REQUEST_SUFFIX = ".txt"


def parse_request(text: str) -> list[str]:
    """One sample ID per line; blank lines and ``#`` comments ignored; order kept, repeats dropped."""
    ids = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            ids.append(line)
    return list(dict.fromkeys(ids))


def _engine_operations():
    try:
        from vczstore_dagster.store.purge import purge
        from vczstore_dagster.store.remove import remove_samples
    except ImportError:
        raise dg.Failure(
            "this installation's store engine cannot remove samples yet "
            "(vczstore_dagster.store.remove / .purge are missing)"
        ) from None
    return remove_samples, purge


@dg.asset(
    partitions_def=withdrawals,
    group_name="withdrawals",
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
    remove_samples, purge = _engine_operations()
    raw = withdrawals.read_bytes(request + REQUEST_SUFFIX)
    sample_ids = parse_request(raw.decode("utf-8", errors="replace"))
    if not sample_ids:
        raise dg.Failure(f"withdrawal request {request} lists no sample ID")
    started = time.perf_counter()
    opened = call_engine("opening the store", store.open, sample_ids=sample_ids)
    removed = call_engine(
        "removing the samples", remove_samples, opened, sample_ids, sample_ids=sample_ids
    )
    purged = call_engine("purging history", purge, opened, sample_ids=sample_ids)
    redacted = [f"{old} → {new}" for old, new in getattr(purged, "redacted", [])]
    return dg.MaterializeResult(
        metadata={
            "samples_requested": len(sample_ids),
            "samples_removed": getattr(removed, "num_removed", 0),
            "snapshot_id": str(getattr(removed, "snapshot_id", "") or ""),
            "chunks_rewritten": getattr(removed, "chunks_rewritten", 0),
            "releases_redacted": len(redacted),
            "redactions": dg.MetadataValue.text(", ".join(redacted) or "none"),
            "snapshots_expired": getattr(purged, "snapshots_expired", 0),
            "objects_deleted": getattr(purged, "objects_deleted", 0),
            "bytes_deleted": dg.MetadataValue.int(getattr(purged, "bytes_deleted", 0)),
            "duration_seconds": round(time.perf_counter() - started, 3),
        }
    )
