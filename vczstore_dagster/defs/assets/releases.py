"""``store_release[R]``: an immutable, citable release of the store (an Icechunk tag)."""

import dataclasses

import dagster as dg

from vczstore_dagster.defs.assets import GROUP
from vczstore_dagster.defs.assets.store import POOL, vcz_store
from vczstore_dagster.defs.partitions import releases
from vczstore_dagster.defs.privacy import call_engine
from vczstore_dagster.defs.resources import VczStoreResource
from vczstore_dagster.store import list_releases, tag_release
from vczstore_dagster.store.release import release_notes


class ReleaseConfig(dg.Config):
    message: str | None = None
    """Release notes, kept in the store's release record (no sample IDs here: they are kept forever)."""


def release_metadata(record) -> dict:
    """Every field of the engine's release record, lists shown as counts and a short text."""
    out = {}
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if isinstance(value, (list, tuple)):
            out[f"num_{field.name}"] = len(value)
            out[field.name] = dg.MetadataValue.text(", ".join(map(str, value)) or "none")
        elif isinstance(value, (bool, int, float, str)):
            out[field.name] = value
        elif value is not None:
            out[field.name] = str(value)
    return out


@dg.asset(
    partitions_def=releases,
    group_name=GROUP,
    deps=[dg.AssetDep(vcz_store, partition_mapping=dg.AllPartitionMapping())],
    pool=POOL,
    kinds={"icechunk"},
    description=(
        "A release: the store's main tagged R (immutable, citable), with its release record, "
        "notes and recomputed per-variant statistics (AC, AN, AF, NS, call rate)."
    ),
)
def store_release(
    context: dg.AssetExecutionContext, config: ReleaseConfig, store: VczStoreResource
) -> dg.MaterializeResult:
    name = context.partition_key
    opened = call_engine("opening the store", store.open)
    result = call_engine("tagging the release", tag_release, opened, name, message=config.message)
    record = next((r for r in list_releases(opened) if r.name == name), result)
    notes = call_engine("writing release notes", release_notes, opened, name)
    return dg.MaterializeResult(
        metadata={
            **release_metadata(record),
            "snapshot_id": result.snapshot_id,
            "notes": dg.MetadataValue.md(notes),
        }
    )
