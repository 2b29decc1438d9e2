"""``vcz_store[B]``: batch B appended to the store in one commit (or the store created from it)."""

import shutil
import time

import dagster as dg

from vczstore_dagster.defs.assets import GROUP, OWNERS
from vczstore_dagster.defs.assets.batches import staged_batch
from vczstore_dagster.defs.assets.summary import record_summary
from vczstore_dagster.defs.checks import (
    REFUSED,
    STORE_CONSISTENT,
    load_settings,
    partitioned_check_spec,
    store_unchanged,
    verdicts_in_run,
)
from vczstore_dagster.defs.partitions import batches
from vczstore_dagster.defs.privacy import EngineFailure, call_engine, vcz_sample_ids
from vczstore_dagster.defs.resources import InboxResource, StagingResource, VczStoreResource
from vczstore_dagster.store import append_batch, init_store, store_info

POOL = "vcz_store"
MOVED_ON = "vczstore/store_moved_on"
"""Tag of a run that found the store changed since the batch was checked, and the batch no longer
fitting it: it appended nothing, and ``append_sensor`` has the batch checked again."""

STORE_CONSISTENT_DESCRIPTION = (
    "The commit's audit: every sample array has the expected length, the existing sample IDs are "
    "unchanged and the appended ones are the batch's. main moves only when it passes."
)


CONSISTENT_OUTPUT = dg.AssetCheckSpec(STORE_CONSISTENT, asset="vcz_store").get_python_identifier()


def cluster_metadata(work) -> dict:
    """How much of the chunk work ran on a Dask cluster (nothing when it ran in the step)."""
    if work is None:
        return {}
    return {"dask_tasks": work.tasks, "dask_workers_used": work.workers_used,
            "dask_workers": work.workers}


def _consistent(passed: bool, description: str, **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=STORE_CONSISTENT,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata=metadata,
    )


def _unchanged(store: VczStoreResource, batch_id: str, why: str):
    """``store_consistent`` when this step wrote nothing (see ``checks.store_unchanged``)."""
    evaluation = store_unchanged(store, why, batch_id)
    if evaluation is not None:
        yield evaluation
    yield dg.Output(None, output_name=CONSISTENT_OUTPUT)


def _create(store: VczStoreResource, path, batch_id: str, sample_ids, started: float):
    result = call_engine(
        "creating the store",
        init_store,
        store.url,
        from_vcz=str(path),
        storage_options=store.storage_options(),
        backend=store.backend or "icechunk",
        batch_id=batch_id,
        float_compression=store.float_compression,
        dask_scheduler=store.dask_scheduler,
        sample_ids=sample_ids,
    )
    info = call_engine("reading the new store", store_info, store.open(), sample_ids=sample_ids)
    holds_batch = batch_id in [b.batch_id for b in info.batches]
    passed = info.num_samples == result.num_samples and holds_batch
    return dg.MaterializeResult(
        metadata={
            "created_store": True,
            "snapshot_id": result.snapshot_id or "",
            "samples_before": 0,
            "samples_after": result.num_samples,
            "samples_added": result.num_samples,
            "num_variants": result.num_variants,
            "duration_seconds": round(time.perf_counter() - started, 3),
            **cluster_metadata(result.cluster),
        },
        check_results=[
            _consistent(
                passed,
                "store created from this batch" if passed else "the new store does not hold the batch",
                samples=info.num_samples,
            )
        ],
    )


def _append(existing, path, batch_id: str, sample_ids, started: float, settings,
            dask_scheduler=None):
    thresholds, allow_new_alleles = settings
    result = call_engine(
        "appending the batch", append_batch, existing, str(path), batch_id=batch_id,
        thresholds=thresholds, allow_new_alleles=allow_new_alleles,
        dask_scheduler=dask_scheduler, sample_ids=sample_ids,
    )
    return dg.MaterializeResult(
        metadata={
            "created_store": False,
            "snapshot_id": result.snapshot_id or "",
            "samples_before": result.samples_before,
            "samples_after": result.samples_after,
            "samples_added": result.samples_after - result.samples_before,
            "bytes_copied": dg.MetadataValue.int(result.bytes_copied),
            "chunks_copied": result.chunks_copied,
            "chunks_reencoded": result.chunks_reencoded,
            "fast_path": result.fast_path,
            "commit_attempts": result.attempts,
            "duration_seconds": round(time.perf_counter() - started, 3),
            **cluster_metadata(result.cluster),
        },
        check_results=[_consistent(True, "audit passed; main moved to the new commit")],
    )


@dg.asset(
    partitions_def=batches,
    group_name=GROUP,
    deps=[staged_batch],
    pool=POOL,
    kinds={"icechunk"},
    owners=OWNERS,
    tags={"layer": "store", "writes": "store"},
    output_required=False,
    check_specs=[partitioned_check_spec(STORE_CONSISTENT, "vcz_store", STORE_CONSISTENT_DESCRIPTION)],
    description=(
        "The cohort's store with batch B appended: one commit on a temporary branch, audited, then "
        "published to main by compare-and-swap. The first batch creates the store. Runs in "
        "ingest_batch after staged_batch[B]'s checks, and appends nothing when one failed (the "
        "run is tagged vczstore/refused; the batch's check says why). Then the batch's inbox "
        "folder and staged copy are deleted: the store holds it."
    ),
)
def vcz_store(context: dg.AssetExecutionContext, store: VczStoreResource,
              staging: StagingResource, inbox: InboxResource):
    batch_id = context.partition_key
    failed = sorted(name for name, passed in
                    verdicts_in_run(context.instance, context.run.run_id).get(batch_id, {}).items()
                    if not passed)
    if failed:
        context.log.error(f"batch {batch_id} is refused by {', '.join(failed)} (see staged_batch's "
                          "checks for the reason and the remedy): nothing was appended")
        context.instance.add_run_tags(context.run.run_id, {REFUSED: ",".join(failed)})
        yield from _unchanged(store, batch_id, f"nothing written: batch {batch_id} is refused by "
                                               "its checks")
        return
    path = staging.batch_vcz(batch_id)
    if not path.exists():
        raise dg.Failure(f"staged batch {batch_id} is missing from {path}: materialize staged_batch")
    sample_ids = vcz_sample_ids(path)
    started = time.perf_counter()
    existing = call_engine("opening the store", store.open_if_exists)
    if existing is None:
        result = _create(store, path, batch_id, sample_ids, started)
    else:
        try:
            result = _append(existing, path, batch_id, sample_ids, started,
                             load_settings(staging, batch_id, store), store.dask_scheduler)
        except EngineFailure as failure:
            if failure.error_type == "IncompatibleBatchError":
                # Its checks passed against an earlier store (another batch was appended since).
                context.log.warning(f"{failure.description}. The store changed since the batch "
                                    "was checked: it is checked again (ingest_batch), nothing "
                                    "was written.")
                context.instance.add_run_tags(context.run.run_id, {MOVED_ON: "true"})
                yield from _unchanged(store, batch_id, "nothing written: the store changed since "
                                                       "the batch was checked, and it is checked again")
                return
            if failure.error_type == "AuditError":  # main was not moved
                yield _consistent(False, failure.description)
            raise
    # The store holds the batch now. No second copy is kept: a withdrawal must leave none behind.
    shutil.rmtree(staging.batch_dir(batch_id), ignore_errors=True)
    inbox.delete(batch_id)
    yield result
    record_summary(context, store, f"batch {batch_id} was appended")
