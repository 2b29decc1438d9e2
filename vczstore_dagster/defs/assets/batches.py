"""A batch on its way in: ``incoming_batch[B]`` (the sender's files) → ``staged_batch[B]`` (a VCZ in
the store's schema, in the staging area)."""

import hashlib
import posixpath
import shutil

import dagster as dg

from vczstore_dagster.defs.assets import GROUP, OWNERS
from vczstore_dagster.defs.assets.conversion import (
    ConversionConfig,
    begin_conversion,
    convert_in_partitions,
    finish_conversion,
    refusal,
    refusing,
)
from vczstore_dagster.defs.checks import (
    READABLE,
    REFUSED,
    BatchChecksConfig,
    coverage_metadata,
    refusal_text,
    refused_evaluation,
    save_settings,
    store_unchanged,
)
from vczstore_dagster.defs.inbox import describe_batch
from vczstore_dagster.defs.partitions import batches
from vczstore_dagster.defs.privacy import EngineFailure, call_engine, vcf_sample_ids, vcz_sample_ids
from vczstore_dagster.defs.resources import InboxResource, StagingResource, VczStoreResource
from vczstore_dagster.store import harmonise_batch
from vczstore_dagster.store.errors import InvalidInputError
from vczstore_dagster.store.planner import plan_variants

SHOWN_FILES = 50


def _sha256(fs, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _inventory(inbox: InboxResource, batch_id: str) -> list[dict]:
    """Every file of the batch (recursively, for a VCZ): relative path, size, sha256."""
    fs = inbox.filesystem()
    root = inbox.path(batch_id)
    files = fs.find(root, detail=True)
    out = []
    for path, info in sorted(files.items()):
        relative = posixpath.relpath(path, root)
        out.append({"path": relative, "size": int(info.get("size") or 0), "sha256": _sha256(fs, path)})
    return out


def _files_table(files: list[dict]) -> str:
    rows = [f"| {f['path']} | {f['size']} | `{f['sha256'][:16]}` |" for f in files[:SHOWN_FILES]]
    more = [f"\n{len(files) - SHOWN_FILES} more files" if len(files) > SHOWN_FILES else ""]
    return "\n".join(["| file | bytes | sha256 |", "|---|---:|---|", *rows, *more])


@dg.asset(
    partitions_def=batches,
    group_name=GROUP,
    kinds={"vcf"},
    owners=OWNERS,
    tags={"layer": "batch"},
    description="A batch in the inbox: its VCF files (or one VCZ), sizes, checksums and sample count "
                "(-1 when its header cannot be read).",
)
def incoming_batch(context: dg.AssetExecutionContext, inbox: InboxResource) -> dg.MaterializeResult:
    batch_id = context.partition_key
    folder = describe_batch(inbox, batch_id)
    if folder.problem:
        raise dg.Failure(f"inbox folder {batch_id} {folder.problem}")
    files = [f for f in _inventory(inbox, batch_id) if f["path"] != "_READY"]
    fs = inbox.filesystem()
    try:
        if folder.vcz:
            num_samples = len(vcz_sample_ids(*inbox.zarr_location(batch_id, folder.vcz)))
        else:
            with fs.open(inbox.path(batch_id, folder.vcfs[0]), "rb") as f:
                num_samples = len(vcf_sample_ids(f))
    except Exception as exc:  # noqa: BLE001 - its conversion refuses it, with the reason
        context.log.warning(f"the sample IDs of batch {batch_id} cannot be read "
                            f"({type(exc).__name__}): staged_batch will say why")
        num_samples = -1
    batch_digest = hashlib.sha256(
        "".join(f"{f['path']}\0{f['sha256']}\n" for f in files).encode()
    ).hexdigest()
    return dg.MaterializeResult(
        metadata={
            "kind": folder.kind,
            "source": inbox.path(batch_id),
            "num_files": len(files),
            "bytes": sum(f["size"] for f in files),
            "num_samples": num_samples,
            "batch_sha256": batch_digest,
            "files": dg.MetadataValue.md(_files_table(files)),
        },
        data_version=dg.DataVersion(batch_digest),
    )


def _plan_metadata(plan) -> dict:
    """Counts only: what harmonising the batch to the store's variant set does, and coverage."""
    if plan is None:
        return {}
    return {**{f"harmonisation_{k}": int(v) for k, v in plan.counts().items()},
            **coverage_metadata(plan)}


def _vcz_ids(vcz) -> list[str]:
    try:
        return vcz_sample_ids(vcz)
    except Exception as exc:  # noqa: BLE001 - whatever the reader met, it is not a readable VCZ
        raise InvalidInputError(f"{vcz.name}: its sample_id array cannot be read as a VCZ "
                                f"({type(exc).__name__})") from exc


def _stage_vcz(context, work, vcz, target, like):
    """A VCZ batch is harmonised to the store's variants and sample grid when it can be;
    otherwise it is staged as it came and the blocking checks say why it does not fit. None
    when it cannot be read (the refusal is written in ``work``)."""
    ids = refusing(context, work, "reading the batch", _vcz_ids, vcz)
    if ids is None:
        return None
    metadata = {"converted": False, "num_samples": len(ids)}
    if like is not None:
        try:
            plan = call_engine("harmonising the batch", harmonise_batch, like, vcz, target,
                               thresholds=None, sample_ids=ids)
            metadata.update(_plan_metadata(plan))
            return metadata, "the store's variant set and sample grid (harmonised VCZ)"
        except EngineFailure as failure:
            if failure.error_type != "InvalidInputError":
                raise
            context.log.warning(f"{failure.description}; staged as it came for the checks")
            shutil.rmtree(target, ignore_errors=True)
    vcz.rename(target)
    return metadata, "its own (a VCZ batch is staged as it came)"


def _plan_of(store, path):
    """The variant plan of a batch staged in its own schema (None when it cannot be made: the
    blocking check says why)."""
    import zarr

    try:
        return plan_variants(store.readonly_group(), zarr.open_group(str(path), mode="r"))
    except Exception:  # noqa: BLE001 - the check reports the same problem, redacted
        return None


@dg.op(ins={"incoming_batch": dg.In(dg.Nothing)},
       out={"work": dg.Out(str), "partitions": dg.DynamicOut(int)},
       description="Copy the batch from the inbox into the staging area; split its VCFs into "
                   "explode partitions (or, for one partition, convert them here).")
def stage_fetch(context: dg.OpExecutionContext, config: ConversionConfig, inbox: InboxResource,
                staging: StagingResource, store: VczStoreResource):
    batch_id = context.partition_key
    folder = describe_batch(inbox, batch_id)
    if folder.problem:
        raise dg.Failure(f"inbox folder {batch_id} {folder.problem}")
    work = staging.batch_dir(batch_id)
    target = staging.batch_vcz(batch_id)
    source = work / "source"
    inbox.fetch((batch_id,), source)
    if target.exists():
        shutil.rmtree(target)
    conversion = staging.conversion_dir(batch_id)
    shutil.rmtree(conversion, ignore_errors=True)
    if folder.vcz:
        yield dg.Output(str(conversion), "work")
        return
    yield from begin_conversion(context, [source / name for name in folder.vcfs], conversion,
                                target, config.partitions or staging.convert_partitions, store)


@dg.op(out=dg.Out(is_required=False),
       description="The staged batch's metadata: what converting (or harmonising) it did, its "
                   "coverage of the store's sites, and the settings its checks apply. A batch "
                   "that cannot be read is not staged: its batch_is_readable check fails.")
def stage_finish(
    context: dg.OpExecutionContext,
    config: BatchChecksConfig,
    work: str,
    encoded: list[int],
    inbox: InboxResource,
    staging: StagingResource,
    store: VczStoreResource,
):
    batch_id = context.partition_key
    folder = describe_batch(inbox, batch_id)
    target = staging.batch_vcz(batch_id)
    source = staging.batch_dir(batch_id) / "source"
    settings = save_settings(staging, batch_id, config, store)
    like = store.open_if_exists()

    if folder.vcz:
        staged = _stage_vcz(context, work, source / folder.vcz, target, like)
    else:
        staged = None if refusal(work) else finish_conversion(context, work, target, like)
    if staged is None:
        _refuse_unreadable(context, store, batch_id, refusal(work), settings)
        shutil.rmtree(source, ignore_errors=True)
        return
    if folder.vcz:
        metadata, schema = staged
    else:
        metadata, schema, harmonisation = staged
        metadata.update(_plan_metadata(harmonisation))
    if like is not None and "site_coverage" not in metadata:  # staged as it came: plan it here
        metadata.update(_plan_metadata(_plan_of(like, target)))
    shutil.rmtree(source, ignore_errors=True)
    metadata.update(settings)
    metadata["schema"] = schema
    metadata["path"] = str(target)
    yield dg.Output(None, metadata=metadata)


def _refuse_unreadable(context, store, batch_id: str, reason: str, settings: dict) -> None:
    """The checks and vcz_store are skipped (nothing staged): their verdicts are given here."""
    context.log_event(refused_evaluation(READABLE, refusal_text(reason), batch_id, settings))
    unchanged = store_unchanged(store, f"nothing written: batch {batch_id} cannot be read", batch_id)
    if unchanged is not None:
        context.log_event(unchanged)
    context.instance.add_run_tags(context.run.run_id, {REFUSED: READABLE})
    context.log.error(f"batch {batch_id} cannot be read: nothing was staged, nothing will be "
                      "appended (see staged_batch's batch_is_readable check)")


class StagedBatchConfig(BatchChecksConfig, ConversionConfig):
    """What this run's batch must meet, and how its conversion is split."""


@dg.config_mapping
def _staged_batch_config(config: StagedBatchConfig) -> dict:
    checks = {name: getattr(config, name) for name in BatchChecksConfig.model_fields}
    return {"stage_fetch": {"config": {"partitions": config.partitions}},
            "stage_finish": {"config": checks}}


@dg.graph_asset(
    partitions_def=batches,
    group_name=GROUP,
    ins={"incoming_batch": dg.AssetIn(dagster_type=dg.Nothing)},
    config=_staged_batch_config,
    kinds={"zarr"},
    owners=OWNERS,
    tags={"layer": "batch"},
    description=(
        "The batch as a VCZ in the staging area, converted with the store's schema (dtypes, "
        "trailing dimensions, chunks, codecs) so that the append can copy encoded chunks, and "
        "harmonised to the store's variant set (coverage figures in the metadata). Its config "
        "sets what the batch must meet (min_site_coverage, max_dropped_fraction, "
        "allow_new_alleles) and how many partitions (steps) the conversion is split into. A "
        "refused batch fails one of its checks, with the reason: retry it with ingest_batch and "
        "that config after a fix, or dismiss it (dismiss_batch). Removed once vcz_store has "
        "appended it."
    ),
)
def staged_batch(incoming_batch):
    work, partitions = stage_fetch(incoming_batch)
    return stage_finish(*convert_in_partitions(work, partitions))
