"""``store_release[R]``: an immutable, citable release of the store (an Icechunk tag).

A release is made by the ``tag_release`` job (the schedule's, or one launched with a name and a
message) or by materializing a partition. A purge that redacts release ``R`` records both sides:
``store_release[R-r1]`` (a new partition: what it replaces, why, when, samples) and a new
materialization of ``store_release[R]`` whose state is ``replaced``; the ``release_citable`` check
says which releases may be cited.
"""


import dataclasses
import datetime

import dagster as dg
from pydantic import Field

from vczstore_dagster.defs.assets import GROUP, OWNERS
from vczstore_dagster.defs.assets.store import POOL, vcz_store
from vczstore_dagster.defs.assets.summary import record_summary
from vczstore_dagster.defs.checks import partitioned_check_spec
from vczstore_dagster.defs.partitions import releases, unsafe_key_reason
from vczstore_dagster.defs.privacy import call_engine
from vczstore_dagster.defs.resources import VczStoreResource
from vczstore_dagster.store import list_releases, tag_release
from vczstore_dagster.store.release import release_notes

STORE_RELEASE = "store_release"
RELEASE_CITABLE = "release_citable"
RELEASE_CITABLE_DESCRIPTION = (
    "The release can be read and cited: its tag is there and no redaction replaced it. A "
    "replaced release fails it (warning) and names the release to cite instead.")


class ReleaseConfig(dg.Config):
    message: str | None = Field(
        default=None,
        description="Release notes, kept in the store's release record and in its commit forever "
                    "(no sample IDs here).")


class TagReleaseConfig(ReleaseConfig):
    name: str | None = Field(
        default=None,
        description="The release's name (a new tag: letters, digits, '.', '_', '-'); default: "
                    "today's date (UTC), with .2, .3... when that is taken.")


def release_metadata(record) -> dict:
    """Every field of the engine's release record, lists shown as counts and a short text;
    ``samples_redacted`` only on a redacted revision (on others it would read as a count)."""
    out = {}
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if field.name == "samples_redacted" and not getattr(record, "replaces", None):
            continue
        if isinstance(value, (list, tuple)):
            out[f"num_{field.name}"] = len(value)
            out[field.name] = dg.MetadataValue.text(", ".join(map(str, value)) or "none")
        elif isinstance(value, (bool, int, float, str)):
            out[field.name] = value
        elif value is not None:
            out[field.name] = str(value)
    return out


def _description(release) -> str:
    if release.state == "replaced":
        return (f"Replaced by {release.replaced_by}"
                + (f" on {release.redacted_at}" if release.redacted_at else "")
                + f": not citable (withdrawn samples removed). Cite {release.replaced_by}.")
    if release.state == "incomplete":
        return "Incomplete: its commit was made, its tag not. Tag it again with the same name."
    if release.replaces:
        return (f"Redacted revision of {release.replaces}, made on {release.redacted_at}: "
                f"{release.samples_redacted} withdrawn sample(s) removed. Citable.")
    return "Citable release."


def _citable(release, partition: bool) -> dict:
    return dict(asset_key=dg.AssetKey(STORE_RELEASE), check_name=RELEASE_CITABLE,
                passed=release.citable, severity=dg.AssetCheckSeverity.WARN,
                description=_description(release),
                metadata={"state": release.state, "replaced_by": release.replaced_by or ""},
                **({"partition": release.name} if partition else {}))


def release_record(opened, name: str):
    """(the engine's release, its metadata) for release ``name``."""
    release = next(r for r in call_engine("listing releases", list_releases, opened)
                   if r.name == name)
    notes = call_engine("writing release notes", release_notes, opened, name)
    metadata = {**release_metadata(release), "citable": release.citable,
                "notes": dg.MetadataValue.md(notes)}
    return release, metadata


def record_releases(context, opened, names) -> None:
    """Record releases made or changed outside ``store_release``'s own step (the tag job, a
    redaction): each a partition of ``releases``, a materialization with its state now, and
    ``release_citable``'s verdict."""
    names = list(dict.fromkeys(names))
    context.instance.add_dynamic_partitions(releases.name, names)
    for name in names:
        release, metadata = release_record(opened, name)
        context.log_event(dg.AssetMaterialization(asset_key=STORE_RELEASE, partition=name,
                                                  metadata=metadata,
                                                  description=_description(release)))
        context.log_event(dg.AssetCheckEvaluation(**_citable(release, partition=True)))


def unused_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base.2``, ``base.3``... (tag names can never be reused, even once deleted)."""
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}.{n}"
    return name


def taken_names(opened, instance) -> set[str]:
    """Release names that cannot be used again: releases, tags, and partitions already made."""
    made = {r.name for r in list_releases(opened)}
    return made | set(opened.repo.list_tags()) | set(instance.get_dynamic_partitions(releases.name))


def dated_name(when: datetime.datetime, opened, instance) -> str:
    return unused_name(when.strftime("%Y-%m-%d"), taken_names(opened, instance))


@dg.asset(
    name=STORE_RELEASE,
    partitions_def=releases,
    group_name=GROUP,
    deps=[dg.AssetDep(vcz_store, partition_mapping=dg.AllPartitionMapping())],
    pool=POOL,
    kinds={"icechunk"},
    owners=OWNERS,
    tags={"layer": "release", "writes": "store"},
    check_specs=[partitioned_check_spec(RELEASE_CITABLE, STORE_RELEASE, RELEASE_CITABLE_DESCRIPTION,
                                        partitions_def=releases, blocking=False)],
    description=(
        "A release: the store's main tagged R (immutable, citable), with its release record, "
        "notes and recomputed per-variant statistics (AC, AN, AF, NS, call rate). Metadata "
        "'state' says citable, replaced (by a redacted R-r1 after a withdrawal) or incomplete. "
        "Made by the tag_release job (name and message in its config) or the weekly schedule."
    ),
)
def store_release(
    context: dg.AssetExecutionContext, config: ReleaseConfig, store: VczStoreResource
):
    name = context.partition_key
    opened = call_engine("opening the store", store.open)
    result = call_engine("tagging the release", tag_release, opened, name, message=config.message)
    release, metadata = release_record(opened, name)
    citable = _citable(release, partition=False)
    citable.pop("asset_key")
    yield dg.MaterializeResult(metadata={**metadata, "snapshot_id": result.snapshot_id},
                               check_results=[dg.AssetCheckResult(**citable)])
    record_summary(context, store, f"release {name} was tagged")


@dg.op(pool=POOL, description="Tag the store's main as a release (engine: tag_release).",
       tags={"writes": "store"})
def tag_store(context: dg.OpExecutionContext, config: TagReleaseConfig,
              store: VczStoreResource) -> None:
    opened = call_engine("opening the store", store.open)
    name = config.name or dated_name(datetime.datetime.now(datetime.UTC), opened, context.instance)
    reason = unsafe_key_reason(name)
    if reason:
        raise dg.Failure(f"release name {name!r} is not usable: {reason}")
    call_engine("tagging the release", tag_release, opened, name, message=config.message)
    context.log.info(f"tagged release {name}")
    record_releases(context, opened, [name])
    record_summary(context, store, f"release {name} was tagged")


@dg.job(name="tag_release", description="Tag the store's main as a release: config name (default: today's date) and "
                    "message. Records store_release[name] and the store summary.")
def tag_release_job():
    tag_store()
