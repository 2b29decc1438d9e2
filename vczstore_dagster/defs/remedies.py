"""The operator's remedies, as jobs run from the launchpad with config; each a thin shell over one
engine call, and those that write the store in the pool ``vcz_store``.

- ``widen_field`` (``field``, ``dtype``): rewrite an integer FORMAT field with a wider type, so a
  batch whose values the store's type cannot hold can be appended (engine: ``widen_field``).
- ``purge_store`` (``delete_leftover_batches``): redact releases that hold withdrawn samples,
  expire history, garbage-collect (engine: ``purge``); report (or delete) batches in the inbox or
  staging area that still hold a withdrawn sample.
- ``recompress_store`` (``columns``): re-encode the sample-chunk columns that removals, redactions
  and appends wrote at the fast level of the store's codec at the store's own level, in one
  commit (engine: ``recompress_store``); run it off the hot path.
- ``dismiss_batch`` (``batch``): give up on a refused batch: its inbox folder and staged copy
  deleted, its partition removed.

Retrying a refused batch is ``ingest_batch`` again for its partition, with ``staged_batch``'s
config (``allow_new_alleles``, ``min_site_coverage``, ``max_dropped_fraction``); tagging a release
with a message is ``tag_release``.
"""


import dagster as dg
from pydantic import Field

from vczstore_dagster.defs.assets.store import POOL, cluster_metadata
from vczstore_dagster.defs.assets.summary import record_summary
from vczstore_dagster.defs.assets.withdrawals import purge_metadata, record_redactions
from vczstore_dagster.defs.cleanup import delete_batch, leftover_batches
from vczstore_dagster.defs.privacy import call_engine
from vczstore_dagster.defs.resources import InboxResource, StagingResource, VczStoreResource
from vczstore_dagster.store import widen_field as widen_store_field
from vczstore_dagster.store.ledger import read_ledger
from vczstore_dagster.store.purge import purge
from vczstore_dagster.store.recompress import recompress_store as recompress_store_columns


class WidenConfig(dg.Config):
    field: str = Field(description="The FORMAT field's array, e.g. call_DP.")
    dtype: str = Field(description="The wider integer type, e.g. int16 or int32.")


class PurgeConfig(dg.Config):
    delete_leftover_batches: bool = Field(
        default=False,
        description="Delete the batches in the inbox or staging area that still hold a withdrawn "
                    "sample (they are always reported).")


class RecompressConfig(dg.Config):
    columns: list[int] = Field(
        default_factory=list,
        description="Sample-chunk columns to recompress (default: every column the store lists at "
                    "the fast level; `store_summary` gives their count).")


class DismissConfig(dg.Config):
    batch: str = Field(description="The refused batch (its partition key and inbox folder).")


DONE = dg.Out(dg.Nothing, description="What was done (counts only) in its metadata.")


@dg.op(pool=POOL, tags={"writes": "store"}, out=DONE, description="Engine: widen_field.")
def widen(context: dg.OpExecutionContext, config: WidenConfig, store: VczStoreResource):
    opened = call_engine("opening the store", store.open)
    result = call_engine("widening the field", widen_store_field, opened, config.field,
                         config.dtype, dask_scheduler=store.dask_scheduler)
    context.log.info(f"{result.field}: {result.old_dtype} → {result.new_dtype}, "
                     f"{result.chunks_rewritten} chunks rewritten, snapshot {result.snapshot_id}")
    record_summary(context, store, f"{result.field} was widened to {result.new_dtype}")
    return dg.Output(None, metadata={
        "field": result.field, "old_dtype": result.old_dtype, "new_dtype": result.new_dtype,
        "chunks_rewritten": result.chunks_rewritten, "snapshot_id": result.snapshot_id or "",
        **cluster_metadata(result.cluster)})


@dg.op(pool=POOL, tags={"writes": "store"}, out=DONE, description="Engine: purge.")
def purge_history(context: dg.OpExecutionContext, config: PurgeConfig, store: VczStoreResource,
                  inbox: InboxResource, staging: StagingResource):
    opened = call_engine("opening the store", store.open)
    purged = call_engine("purging history", purge, opened, dask_scheduler=store.dask_scheduler)
    record_redactions(context, opened, purged)
    leftovers = leftover_batches(context, opened, inbox, staging,
                                 delete=config.delete_leftover_batches)
    record_summary(context, store, "a purge")
    return dg.Output(None, metadata={**purge_metadata(purged), **leftovers})


@dg.op(pool=POOL, tags={"writes": "store"}, out=DONE, description="Engine: recompress_store.")
def recompress(context: dg.OpExecutionContext, config: RecompressConfig, store: VczStoreResource):
    opened = call_engine("opening the store", store.open)
    result = call_engine("recompressing", recompress_store_columns, opened, config.columns or None,
                         dask_scheduler=store.dask_scheduler)
    if not result.columns:
        context.log.info("nothing to recompress: no column was written at the fast level")
    else:
        context.log.info(f"{len(result.columns)} sample-chunk column(s), {result.chunks_rewritten} "
                         f"chunks: {result.bytes_before:,} → {result.bytes_after:,} bytes, snapshot "
                         f"{result.snapshot_id}")
        record_summary(context, store, f"{len(result.columns)} column(s) were recompressed")
    return dg.Output(None, metadata={
        "columns": len(result.columns), "columns_left": len(result.columns_left),
        "chunks_rewritten": result.chunks_rewritten, "bytes_before": result.bytes_before,
        "bytes_after": result.bytes_after, "seconds": round(result.seconds, 2),
        "snapshot_id": result.snapshot_id or "", **cluster_metadata(result.cluster)})


@dg.op(out=DONE,
       description="Delete a refused batch's inbox folder and staged copy, remove its partition.")
def dismiss(context: dg.OpExecutionContext, config: DismissConfig, store: VczStoreResource,
            inbox: InboxResource, staging: StagingResource):
    opened = store.open_if_exists()
    if opened is not None and config.batch in read_ledger(opened.readonly_group()).batch_ids():
        raise dg.Failure(f"batch {config.batch} is in the store: there is nothing to dismiss "
                         "(a withdrawal removes samples)")
    done = delete_batch(context, inbox, staging, config.batch)
    if not any(done.values()):
        raise dg.Failure(f"no batch {config.batch}: no inbox folder, staged copy or partition")
    context.log.info(f"batch {config.batch} dismissed: " + ", ".join(k for k, v in done.items() if v))
    return dg.Output(None, metadata=done)


@dg.job(description="Widen an integer FORMAT field of the store (config: field, dtype).")
def widen_field():
    widen()


@dg.job(description="Purge the store's history of withdrawn samples: redact releases, expire "
                    "snapshots, garbage-collect; report batches that still hold withdrawn samples "
                    "(config: delete_leftover_batches).")
def purge_store():
    purge_history()


@dg.job(description="Re-encode the columns written at the fast level of the store's codec at its "
                    "own level, in one commit (config: columns; default every such column). Slow: "
                    "run it off the hot path.")
def recompress_store():
    recompress()


@dg.job(description="Dismiss a refused batch (config: batch): its inbox folder and staged copy "
                    "are deleted and its partition removed.")
def dismiss_batch():
    dismiss()
