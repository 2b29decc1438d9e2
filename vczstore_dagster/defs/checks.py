"""Blocking checks on ``staged_batch[B]``: one per concern of the engine's compatibility report.

A failed check stops ``vcz_store[B]`` in the same run, so the store is never touched by a batch
that does not fit. ``store_consistent`` (the append's audit) is reported by ``vcz_store`` itself.

What a batch must meet (coverage thresholds, whether new ALT alleles may be added) is decided per
run in ``staged_batch``'s config (:class:`BatchChecksConfig`; the store resource gives the
defaults), kept beside the staged batch, and read by the checks and by ``vcz_store``, so that the
three steps judge the batch alike.
"""

import collections
import json
import warnings

import dagster as dg
from pydantic import Field

from vczstore_dagster.defs.partitions import batches
from vczstore_dagster.defs.privacy import call_engine, redact, vcz_sample_ids
from vczstore_dagster.defs.resources import StagingResource, VczStoreResource
from vczstore_dagster.store import Finding, Thresholds, check_batch
from vczstore_dagster.store.compatibility import check_new_batch
from vczstore_dagster.store.plan import percent

SETTINGS_FILE = "checks.json"
REMEDY = (
    "Retry after a fix: launch ingest_batch for this partition again, with "
    "`ops: {staged_batch: {config: {allow_new_alleles: true}}}` (or `min_site_coverage`, "
    "`max_dropped_fraction`), after widen_field when a field needs a wider type. Give up on the "
    "batch: launch dismiss_batch with `batch: <partition>` (its inbox folder and staged copy are "
    "deleted, its partition removed).")

# Which of the engine's concerns each check answers for. Layout findings (chunk grid, Zarr format)
# and source findings (not a VCZ) are about the batch's arrays, so they count as fields.
CONCERNS = {
    "variants_match_store": ("variants",),
    "fields_match_store": ("fields", "layout", "source"),
    "samples_are_new": ("samples",),
}
DESCRIPTIONS = {
    "variants_match_store": (
        "The batch covers enough of the store's sites and drops few of its own records (coverage "
        "per contig in the metadata); it is on the store's reference (contig names and lengths, "
        "positions not shifted by one); it brings no new ALT allele unless the run allows them."),
    "fields_match_store": "The batch's fields fit the store's arrays: names, dtypes, shapes, format.",
    "samples_are_new": "Every sample ID is non-empty, unique, not in the store, never withdrawn.",
}


class BatchChecksConfig(dg.Config):
    """What this run's batch must meet; unset values come from the store resource."""

    min_site_coverage: float | None = Field(
        default=None, ge=0, le=1,
        description="Refuse the batch when it covers less than this share of the store's sites "
                    "(default: the store resource's min_site_coverage, 0.5 unless set).")
    max_dropped_fraction: float | None = Field(
        default=None, ge=0, le=1,
        description="Refuse the batch when more than this share of its records are at no store "
                    "site (default: the store resource's max_dropped_fraction, 0.5 unless set).")
    allow_new_alleles: bool = Field(
        default=False,
        description="Add the new ALT alleles the batch brings to the store's sites in the append.")


def save_settings(staging: StagingResource, batch_id: str, config: BatchChecksConfig,
                  store: VczStoreResource) -> dict:
    """The run's settings, completed from the store resource, kept beside the staged batch."""
    settings = {
        "min_site_coverage": config.min_site_coverage if config.min_site_coverage is not None
        else store.min_site_coverage,
        "max_dropped_fraction": config.max_dropped_fraction if config.max_dropped_fraction is not None
        else store.max_dropped_fraction,
        "allow_new_alleles": config.allow_new_alleles,
    }
    path = staging.batch_dir(batch_id) / SETTINGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings))
    return settings


def load_settings(staging: StagingResource, batch_id: str,
                  store: VczStoreResource) -> tuple[Thresholds, bool]:
    """(thresholds, allow_new_alleles) that ``staged_batch`` decided for this batch."""
    path = staging.batch_dir(batch_id) / SETTINGS_FILE
    raw = json.loads(path.read_text()) if path.exists() else {}
    thresholds = Thresholds(raw.get("min_site_coverage", store.min_site_coverage),
                            raw.get("max_dropped_fraction", store.max_dropped_fraction))
    return thresholds, bool(raw.get("allow_new_alleles", False))


def coverage_metadata(plan) -> dict:
    """The plan's coverage figures as numbers, and per contig as a table."""
    if plan is None:
        return {}
    columns = [("contig", "string"), ("store_sites", "int"), ("covered", "int"),
               ("site_coverage", "float"), ("batch_records", "int"), ("dropped", "int"),
               ("dropped_fraction", "float")]
    rows = [dg.TableRecord({"contig": name, "store_sites": c.store_sites, "covered": c.covered,
                            "site_coverage": round(c.site_coverage, 6) if c.store_sites else 0.0,
                            "batch_records": c.records, "dropped": c.dropped,
                            "dropped_fraction": round(c.dropped_fraction, 6) if c.records else 0.0})
            for name, c in plan.contigs.items() if c.store_sites or c.records]
    schema = dg.TableSchema(columns=[dg.TableColumn(n, t) for n, t in columns])
    return {**plan.coverage_metadata(),
            "coverage": f"{percent(plan.site_coverage)} of the store's sites; "
                        f"{percent(plan.dropped_fraction)} of the batch's records dropped",
            "coverage_by_contig": dg.MetadataValue.table(rows, schema=schema)}


def partitioned_check_spec(name: str, asset: str, description: str, *,
                           partitions_def=batches, blocking: bool = True) -> dg.AssetCheckSpec:
    # Per-partition checks are a preview feature in Dagster 1.13; the warning says nothing new.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=asset, blocking=blocking,
                                 partitions_def=partitions_def, description=description)


def _finding_text(finding: Finding, sample_ids) -> str:
    # The engine's public message names no sample; redacting again costs nothing.
    return f"[{finding.severity}] {finding.id}: {redact(finding.public_message, sample_ids)}"


def check_result(name: str, findings: list[Finding], sample_ids, fast_path: bool,
                 extra: dict | None = None) -> dg.AssetCheckResult:
    errors = [f for f in findings if f.severity == "error"]
    warnings_ = [f for f in findings if f.severity == "warning"]
    lines = [_finding_text(f, sample_ids) for f in findings]
    if errors:
        description = ("; ".join(_finding_text(f, sample_ids) for f in errors)
                       + " — refused: retry with ingest_batch and staged_batch's config, or "
                       "dismiss_batch (see 'remedy')")
        extra = {**(extra or {}), "remedy": dg.MetadataValue.md(REMEDY)}
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
            **(extra or {}),
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
    sample_ids = vcz_sample_ids(path)
    existing = store.open_if_exists()
    if existing is None:  # the batch will create the store: its samples and chunks are checked
        report = call_engine("checking the batch", check_new_batch, path, sample_ids=sample_ids)
        for name, concerns in CONCERNS.items():
            findings = [f for f in report.findings if f.concern in concerns]
            if name == "variants_match_store":
                findings.append(Finding("new_store", "info", "variants",
                                        "no store yet: this batch will create it"))
            yield check_result(name, findings, sample_ids, False)
        return
    thresholds, allow_new_alleles = load_settings(staging, batch_id, store)
    report = call_engine("checking the batch", check_batch, existing, path, sample_ids=sample_ids,
                         thresholds=thresholds, allow_new_alleles=allow_new_alleles)
    settings = {"min_site_coverage": thresholds.min_site_coverage,
                "max_dropped_fraction": thresholds.max_dropped_fraction,
                "allow_new_alleles": allow_new_alleles}
    for name, concerns in CONCERNS.items():
        findings = [f for f in report.findings if f.concern in concerns]
        extra = {**coverage_metadata(report.plan), **settings} if name == "variants_match_store" else {}
        yield check_result(name, findings, sample_ids, report.fast_path, extra)
