"""Blocking checks on ``staged_batch[B]``: one per concern of the engine's compatibility report.

A failed check stops ``vcz_store[B]`` in the same run, so the store is never touched by a batch
that does not fit. ``store_consistent`` (the append's audit) is reported by ``vcz_store`` itself.
"""

import collections
import warnings

import dagster as dg

from vczstore_dagster.defs.partitions import batches
from vczstore_dagster.defs.privacy import call_engine, redact, vcz_sample_ids
from vczstore_dagster.defs.resources import StagingResource, VczStoreResource
from vczstore_dagster.store import Finding, check_batch

# Which of the engine's concerns each check answers for. Layout findings (chunk grid, Zarr format)
# and source findings (not a VCZ) are about the batch's arrays, so they count as fields.
CONCERNS = {
    "variants_match_store": ("variants",),
    "fields_match_store": ("fields", "layout", "source"),
    "samples_are_new": ("samples",),
}
DESCRIPTIONS = {
    "variants_match_store": "The batch has exactly the store's variants: contigs, positions, alleles.",
    "fields_match_store": "The batch's fields fit the store's arrays: names, dtypes, shapes, format.",
    "samples_are_new": "Every sample ID is non-empty, unique, not in the store, never withdrawn.",
}


def partitioned_check_spec(name: str, asset: str, description: str) -> dg.AssetCheckSpec:
    # Per-partition checks are a preview feature in Dagster 1.13; the warning says nothing new.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name, asset=asset, blocking=True, partitions_def=batches, description=description
        )


def _finding_text(finding: Finding, sample_ids) -> str:
    # The engine's public message names no sample; redacting again costs nothing.
    return f"[{finding.severity}] {finding.id}: {redact(finding.public_message, sample_ids)}"


def check_result(name: str, findings: list[Finding], sample_ids, fast_path: bool) -> dg.AssetCheckResult:
    errors = [f for f in findings if f.severity == "error"]
    warnings_ = [f for f in findings if f.severity == "warning"]
    lines = [_finding_text(f, sample_ids) for f in findings]
    if errors:
        description = "; ".join(_finding_text(f, sample_ids) for f in errors)
    else:
        description = f"passed ({len(warnings_)} warning(s))"
    return dg.AssetCheckResult(
        asset_key="staged_batch",
        check_name=name,
        passed=not errors,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "errors": len(errors),
            "warnings": len(warnings_),
            "finding_ids": ", ".join(sorted(collections.Counter(f.id for f in findings))) or "none",
            "findings": dg.MetadataValue.md("\n".join(f"- {line}" for line in lines) or "none"),
            "fast_path": fast_path,
        },
    )


@dg.multi_asset_check(
    specs=[partitioned_check_spec(name, "staged_batch", DESCRIPTIONS[name]) for name in CONCERNS],
    description="Compare the staged batch with the store (one engine check, three verdicts).",
)
def staged_batch_matches_store(
    context: dg.AssetCheckExecutionContext, store: VczStoreResource, staging: StagingResource
):
    batch_id = context.partition_key
    path = staging.batch_vcz(batch_id)
    existing = store.open_if_exists()
    if existing is None:
        for name in CONCERNS:
            yield dg.AssetCheckResult(
                asset_key="staged_batch",
                check_name=name,
                passed=True,
                description="no store yet: this batch will create it",
                metadata={"errors": 0, "warnings": 0},
            )
        return
    sample_ids = vcz_sample_ids(path)
    report = call_engine("checking the batch", check_batch, existing, path, sample_ids=sample_ids)
    for name, concerns in CONCERNS.items():
        findings = [f for f in report.findings if f.concern in concerns]
        yield check_result(name, findings, sample_ids, report.fast_path)
