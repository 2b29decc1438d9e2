"""Checks on ``staged_batch[B]``: one per concern of the engine's compatibility report, and one
that the batch could be read at all.

They are blocking: ``vcz_store[B]`` waits for them in the same run and appends nothing when one
failed. A refusal is not a failure of the run: a failed verdict is reported with ``blocking``
off, so that Dagster does not fail the step (which would fail the run, and show ``vcz_store[B]``,
planned in it, as a failed store); ``vcz_store`` reads the verdicts and refuses itself.
``store_consistent`` (the append's audit) is reported by ``vcz_store``.

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
from vczstore_dagster.store import Finding, Thresholds, audit_sample_axis, check_batch
from vczstore_dagster.store.compatibility import check_new_batch
from vczstore_dagster.store.plan import percent

SETTINGS_FILE = "checks.json"
STORE_CONSISTENT = "store_consistent"
REFUSED = "vczstore/refused"
"""Tag of a run whose batch failed checks (the value names them): it appended nothing."""
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
READABLE = "batch_is_readable"
"""Reported by the conversion when it cannot read the batch (nothing is staged then), else passed
by the other checks' step."""
CHECK_NAMES = (READABLE, *CONCERNS)
DESCRIPTIONS = {
    READABLE: "The batch's files can be read: every VCF record (htslib and bio2zarr) or a VCZ's "
              "arrays, so that it could be staged.",
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


def refusal_text(reasons: str) -> str:
    return (f"{reasons} — refused: retry with ingest_batch and staged_batch's config, or "
            "dismiss_batch (see 'remedy')")


def verdict(name: str, passed: bool, description: str, partition: str, metadata: dict):
    """A check's verdict as step events: passed, a plain result; failed, the evaluation with
    ``blocking`` off and the check's output (the step must not fail, see the module's doc)."""
    if passed:
        yield dg.AssetCheckResult(asset_key="staged_batch", check_name=name, passed=True,
                                  severity=dg.AssetCheckSeverity.ERROR, description=description,
                                  metadata=metadata)
        return
    yield refused_evaluation(name, description, partition, metadata)
    yield dg.Output(None, output_name=dg.AssetCheckSpec(name, asset="staged_batch")
                    .get_python_identifier())


def refused_evaluation(name: str, description: str, partition: str,
                       metadata: dict) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey("staged_batch"), check_name=name, passed=False,
        severity=dg.AssetCheckSeverity.ERROR, description=description,
        metadata={**metadata, "remedy": dg.MetadataValue.md(REMEDY)}, blocking=False,
        partition=partition)


def check_verdict(name: str, findings: list[Finding], sample_ids, fast_path: bool, partition: str,
                  extra: dict | None = None):
    errors = [f for f in findings if f.severity == "error"]
    warnings_ = [f for f in findings if f.severity == "warning"]
    lines = [_finding_text(f, sample_ids) for f in findings]
    if errors:
        description = refusal_text("; ".join(_finding_text(f, sample_ids) for f in errors))
    else:
        description = f"passed ({len(warnings_)} warning(s))"
    yield from verdict(name, not errors, description, partition, {
        "errors": len(errors),
        "warnings": len(warnings_),
        "finding_ids": ", ".join(sorted(collections.Counter(f.id for f in findings))) or "none",
        "findings": dg.MetadataValue.md("\n".join(f"- {line}" for line in lines) or "none"),
        "fast_path": fast_path,
        **(extra or {}),
    })


@dg.multi_asset_check(
    specs=[partitioned_check_spec(name, "staged_batch", DESCRIPTIONS[name]) for name in CHECK_NAMES],
    description="Compare the staged batch with the store (one engine check, three verdicts); the "
                "batch was read, or it would not be staged.",
)
def staged_batch_matches_store(
    context: dg.AssetCheckExecutionContext, store: VczStoreResource, staging: StagingResource
):
    batch_id = context.partition_key
    path = staging.batch_vcz(batch_id)
    sample_ids = vcz_sample_ids(path)
    yield from verdict(READABLE, True, f"read and staged: {len(sample_ids)} samples", batch_id,
                       {"num_samples": len(sample_ids)})
    existing = store.open_if_exists()
    if existing is None:  # the batch will create the store: its samples and chunks are checked
        report = call_engine("checking the batch", check_new_batch, path, sample_ids=sample_ids)
        for name, concerns in CONCERNS.items():
            findings = [f for f in report.findings if f.concern in concerns]
            if name == "variants_match_store":
                findings.append(Finding("new_store", "info", "variants",
                                        "no store yet: this batch will create it"))
            yield from check_verdict(name, findings, sample_ids, False, batch_id)
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
        yield from check_verdict(name, findings, sample_ids, report.fast_path, batch_id, extra)


def verdicts_in_run(instance, run_id: str) -> dict[str, dict[str, bool]]:
    """{batch: {check: passed}} for the checks on ``staged_batch`` evaluated in run ``run_id``."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, limit=1000).records
    verdicts: dict[str, dict[str, bool]] = {}
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation.asset_key == dg.AssetKey("staged_batch"):
            verdicts.setdefault(evaluation.partition, {})[evaluation.check_name] = evaluation.passed
    return verdicts


def all_passed(verdicts: dict[str, bool]) -> bool:
    return set(verdicts) >= set(CHECK_NAMES) and all(verdicts.values())


def store_unchanged(store: VczStoreResource, why: str, batch_id: str):
    """``store_consistent[B]`` for a run that wrote nothing (a refused batch): main read again as
    it stands, so that the check keeps the store's real state rather than a check that did not
    run. None while no store exists."""
    existing = call_engine("opening the store", store.open_if_exists)
    if existing is None:
        return None
    audit = call_engine("auditing the store", audit_sample_axis, existing)
    if audit.passed:
        description = (f"{why}; main as it stands: its {audit.num_arrays} sample arrays hold "
                       f"its {audit.num_samples} samples")
    else:
        description = f"{why}; but main's sample arrays disagree with sample_id: {audit.mismatched}"
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey("vcz_store"), check_name=STORE_CONSISTENT, passed=audit.passed,
        severity=dg.AssetCheckSeverity.ERROR, description=description, partition=batch_id,
        metadata={"samples": audit.num_samples, "snapshot_id": audit.snapshot_id or "",
                  "wrote": False})
