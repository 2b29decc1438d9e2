"""The conversion behind ``staged_batch``: a batch's VCFs converted in partitions, each one a
Dagster step (dynamic outputs keyed by partition number), so that the run's executor places them:
the run's process (the default), a process per step (``multiprocess``), a Kubernetes Job or a
container per step (``k8s``, ``docker``; see docs/scale.md). One partition (the default) is
converted in ``stage_fetch`` itself, as fast as before the steps existed.

    stage_fetch → explode_partition[0..n) → plan_encoding → encode_partition[0..m) → stage_finish

Every step works in the batch's work directory in the staging area (bio2zarr writes local
directories only): steps on several machines need it on a shared volume. What passes between steps
is that directory's path and partition numbers; logs and metadata carry counts, never a sample ID
(errors are redacted against the batch's sample IDs).

A batch that cannot be read (the engine's ``InvalidInputError``: a VCF htslib or bio2zarr cannot
read, values that do not encode) is refused, not failed: the step that met it writes the reason in
the work directory and ends well, the later steps do nothing, and ``stage_finish`` reports the
failed ``batch_is_readable`` check and stages nothing. A failed step would fail the run, and with
it ``vcz_store[B]``, planned in the same run: the store would look broken by a bad batch.
"""

import json
import pathlib

import dagster as dg
from pydantic import Field

from vczstore_dagster.defs.privacy import EngineFailure, call_engine, redact, vcf_sample_ids
from vczstore_dagster.defs.resources import VczStoreResource
from vczstore_dagster.store import convert
from vczstore_dagster.store.errors import InvalidInputError


class ConversionConfig(dg.Config):
    partitions: int | None = Field(
        default=None, ge=1,
        description="Convert the batch's VCFs in this many partitions, each a step of its own "
                    "(default: the staging resource's convert_partitions, from "
                    "VCZSTORE_CONVERT_PARTITIONS, 1 unless set).")


REFUSAL_FILE = "refused.json"


def refusal(work) -> str | None:
    """Why the batch in ``work`` cannot be read, if a step found it so."""
    path = pathlib.Path(work) / REFUSAL_FILE
    return json.loads(path.read_text())["reason"] if path.exists() else None


def refusing(context, work, what: str, fn, /, *args, sample_ids=(), **kwargs):
    """``call_engine(what, fn, ...)``; an input the engine cannot read is written down as the
    batch's refusal (None is returned) instead of failing the step."""
    try:
        return call_engine(what, fn, *args, sample_ids=sample_ids, **kwargs)
    except EngineFailure as failure:
        if failure.error_type != "InvalidInputError":
            raise
        pathlib.Path(work).mkdir(parents=True, exist_ok=True)
        (pathlib.Path(work) / REFUSAL_FILE).write_text(json.dumps({"reason": failure.description}))
        context.log.error(f"{failure.description}: the batch is refused")
        return None


def _size(n: int) -> str:
    from bio2zarr.core import display_size

    return display_size(n)


def begin_conversion(context, vcfs, work, target, partitions: int, store: VczStoreResource):
    """``stage_fetch``'s outputs for VCF files: the work directory, and one dynamic output per
    explode partition. One partition is converted right here, steps fanned out for nothing cost
    more than they give: the steps after it find the conversion finished."""
    sample_ids = refusing(context, work, "reading the batch's VCF header", _header_ids, vcfs[0])
    if sample_ids is None:
        yield dg.Output(str(work), "work")
        return
    if partitions == 1:
        if refusing(context, work, "converting the batch", convert.convert_vcfs, vcfs, target,
                    like=store.open_if_exists(), thresholds=None, own_schema_if_misfit=True,
                    work=work, sample_ids=sample_ids):
            context.log.info(f"converted {len(vcfs)} VCF file(s) in this step (1 partition)")
        yield dg.Output(str(work), "work")
        return
    plan = refusing(context, work, "reading the batch's VCFs", convert.begin, vcfs, work,
                    partitions=partitions, sample_ids=sample_ids)
    if plan is None:
        yield dg.Output(str(work), "work")
        return
    context.log.info(f"converting {len(vcfs)} VCF file(s) of {plan.num_samples} samples in "
                     f"{plan.num_partitions} explode partition(s) (asked for {partitions})")
    yield dg.Output(str(work), "work", metadata={"explode_partitions": plan.num_partitions})
    for j in range(plan.num_partitions):
        yield dg.DynamicOutput(j, mapping_key=str(j), output_name="partitions")


def _header_ids(vcf) -> list[str]:
    try:
        with open(vcf, "rb") as f:
            return vcf_sample_ids(f)
    except Exception as exc:  # noqa: BLE001 - whatever the reader met, the file is not a VCF
        raise InvalidInputError(f"{pathlib.Path(vcf).name}: its VCF header cannot be read "
                                f"({type(exc).__name__})") from exc


def _partition_output(context, kind: str, result) -> dg.Output:
    records = f", {result.records} records" if result.records is not None else ""
    context.log.info(f"{kind} partition {result.partition} done in {result.seconds:.2f} s "
                     f"(pid {result.pid}{records})")
    metadata = {"partition": result.partition, "seconds": round(result.seconds, 3),
                "pid": result.pid}
    if result.records is not None:
        metadata["records"] = result.records
    return dg.Output(result.partition, metadata=metadata)


@dg.op(description="Read one explode partition of the batch's VCFs into bio2zarr's ICF.")
def explode_partition(context: dg.OpExecutionContext, work: str, partition: int) -> dg.Output[int]:
    result = refusing(context, work, f"reading explode partition {partition}",
                      convert.explode_partition, work, partition, sample_ids=convert.sample_ids(work))
    return _partition_output(context, "explode", result) if result else dg.Output(partition)


@dg.op(out={"work": dg.Out(str), "partitions": dg.DynamicOut(int)},
       description="Choose the schema (the store's), split the encoding into partitions (whole "
                   "variant chunks) and estimate the memory each one needs.")
def plan_encoding(context: dg.OpExecutionContext, work: str, exploded: list[int],
                  store: VczStoreResource):
    if not convert.begun(work) or convert.finished(work) or refusal(work):
        yield dg.Output(work, "work")  # a VCZ batch, one partition, or a batch refused already
        return
    plan = refusing(context, work, "planning the encoding", convert.plan_encoding, work,
                    store.open_if_exists(), own_schema_if_misfit=True,
                    sample_ids=convert.sample_ids(work))
    if plan is None:
        yield dg.Output(work, "work")
        return
    schema = "the store's schema" if plan.store_schema else "its own schema"
    context.log.info(f"{len(exploded)} explode partition(s) done; encoding {plan.num_variants} "
                     f"variants in {schema}, in {plan.num_partitions} partition(s), each needing "
                     f"about {_size(plan.max_encoding_memory)} (bio2zarr's estimate)")
    yield dg.Output(work, "work", metadata={
        "partitions": plan.num_partitions,
        "memory_per_partition": _size(plan.max_encoding_memory),
        "memory_per_partition_bytes": dg.MetadataValue.int(plan.max_encoding_memory)})
    for j in range(plan.num_partitions):
        yield dg.DynamicOutput(j, mapping_key=str(j), output_name="partitions")


@dg.op(description="Encode one partition (whole variant chunks) of the batch.")
def encode_partition(context: dg.OpExecutionContext, work: str, partition: int) -> dg.Output[int]:
    result = refusing(context, work, f"encoding partition {partition}", convert.encode_partition,
                      work, partition, own_schema_if_misfit=True,
                      sample_ids=convert.sample_ids(work))
    if result is None:
        return dg.Output(partition)
    if result.misfit:
        context.log.warning(f"partition {partition} does not fit the store's schema: the batch "
                            "is encoded again in its own when it is staged")
    return _partition_output(context, "encode", result)


def convert_in_partitions(work, partitions):
    """Compose the fan-outs (inside ``staged_batch``'s graph: a graph asset's own output cannot be
    dynamic); the encoded partitions are collected for ``stage_finish``."""
    exploded = partitions.map(lambda j: explode_partition(work, j)).collect()
    work, encodes = plan_encoding(work, exploded)
    return work, encodes.map(lambda j: encode_partition(work, j)).collect()


def finish_conversion(context, work, target, like):
    """Finalise the partitions into the staged batch (harmonised to the store when encoded in its
    schema): (metadata, which schema it has, the harmonisation plan), or None when refused."""
    sample_ids = convert.sample_ids(work)
    result = refusing(context, work, "converting the batch", convert.finish, work, target, like,
                      thresholds=None, own_schema_if_misfit=True, sample_ids=sample_ids)
    if result is None:
        return None
    if like is None:
        schema = "its own (no store yet: it will create it)"
    elif result.misfit:
        misfit = redact(result.misfit, sample_ids)
        context.log.warning(f"{misfit}; converted in the batch's own schema for the checks")
        schema = f"its own: it does not fit the store's ({misfit})"
    else:
        schema = "the store's"
    context.log.info(f"converted {result.num_samples} samples × {result.num_variants} variants in "
                     f"{result.partitions} partition(s) needing about "
                     f"{_size(result.max_encoding_memory)} each, {result.seconds:.1f} s")
    return {
        "converted": True,
        "num_samples": result.num_samples,
        "num_variants": result.num_variants,
        "sample_offset": result.sample_offset,
        "dropped_fields": ", ".join(result.dropped_fields) or "none",
        "duration_seconds": round(result.seconds, 3),
        "partitions": result.partitions,
        "explode_partitions": result.explode_partitions,
        "memory_per_partition": _size(result.max_encoding_memory),
        "memory_per_partition_bytes": dg.MetadataValue.int(result.max_encoding_memory),
    }, schema, result.harmonisation
