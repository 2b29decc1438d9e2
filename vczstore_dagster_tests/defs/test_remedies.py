"""The operator's remedies as jobs, run in-process against a real instance and store: widen a
field and retry the refused batch, tag a release with a message, dismiss a refused batch, purge
(reporting, then deleting, batches that still hold a withdrawn sample)."""

from __future__ import annotations

import io

import dagster as dg
import numpy as np

from vczstore_dagster import testdata
from vczstore_dagster.dev import sites_with_extra_alleles
from vczstore_dagster.store import list_releases, open_store, store_info, write_vcf
from vczstore_dagster.store.remove import remove_samples
from vczstore_dagster_tests.defs.conftest import check_evaluations, ingest, materializations, tag
from vczstore_dagster_tests.helpers import assert_unchanged, tree_digest


def run_op_job(defs, instance, job: str, op: str, config: dict):
    return defs.resolve_job_def(job).execute_in_process(
        run_config={"ops": {op: {"config": config}}}, instance=instance, raise_on_error=False)


def output_metadata(result, op: str) -> dict:
    [event] = [e for e in result.all_events if e.is_successful_output and e.step_key == op]
    return {k: v.value for k, v in event.event_specific_data.metadata.items()}


def _vcf_text(url) -> str:
    out = io.StringIO()
    write_vcf(open_store(url), out)
    return out.getvalue()


def test_widen_then_retry_the_refused_batch_and_tag_with_a_message(project, vcf_batch):
    project.drop_batch("shallow", [vcf_batch("W", 6)])  # depths < 60: call_DP is int8
    project.drop_batch("deep", [vcf_batch("W", 5, start=6, dp_max=1000)])
    defs = project.definitions()
    with dg.instance_for_test() as instance:
        assert ingest(defs, instance, "shallow").success
        refused = ingest(defs, instance, "deep")
        assert not refused.success and not refused.appended
        fields = check_evaluations(refused)["fields_match_store"]
        assert not fields.passed and "widen" in fields.description

        widened = run_op_job(defs, instance, "widen_field", "widen",
                             {"field": "call_DP", "dtype": "int16"})
        assert widened.success
        assert output_metadata(widened, "widen")["new_dtype"] == "int16"
        assert materializations(widened)["store_summary"]["total_samples"] == 6

        retried = ingest(defs, instance, "deep")  # ingest_batch again for the partition
        assert retried.success and retried.appended

        bad = run_op_job(defs, instance, "widen_field", "widen", {"field": "call_DP",
                                                                  "dtype": "int8"})
        assert not bad.success

        release = tag(defs, instance, "v1", "First data freeze")
        assert release.success
        meta = materializations(release)["store_release"]
        assert meta["message"] == "First data freeze" and "First data freeze" in meta["notes"]
        assert instance.get_dynamic_partitions("releases") == ["v1"]
    store = open_store(project.store_url)
    assert np.dtype(store.readonly_group()["call_DP"].dtype) == np.int16
    assert [b.batch_id for b in store_info(store).batches] == ["shallow", "deep"]


def test_dismiss_a_refused_batch_and_purge(project, vcf_batch, tmp_path):
    project.drop_batch("good", [vcf_batch("D", 8)])
    extra = testdata.write_vcf(tmp_path / "extra.vcf", testdata.sample_names("X", 4),
                               sites=sites_with_extra_alleles(num_variants=100))
    project.drop_batch("extra-alleles", [extra])
    project.drop_batch("overlaps", [vcf_batch("D", 3, start=6)])  # D00006, D00007 are in "good"
    defs = project.definitions()
    with dg.instance_for_test() as instance:
        assert ingest(defs, instance, "good").success
        assert tag(defs, instance, "r1").success
        for name in ("extra-alleles", "overlaps"):
            assert not ingest(defs, instance, name).success
        assert (project.staging / "extra-alleles").exists()
        before = tree_digest(project.store_url)

        dismissed = run_op_job(defs, instance, "dismiss_batch", "dismiss",
                               {"batch": "extra-alleles"})
        assert dismissed.success
        assert output_metadata(dismissed, "dismiss") == {
            "inbox_folder_deleted": True, "staged_copy_deleted": True, "partition_removed": True}
        assert not (project.inbox / "extra-alleles").exists()
        assert not (project.staging / "extra-alleles").exists()
        assert "extra-alleles" not in instance.get_dynamic_partitions("batches")
        assert_unchanged(before, tree_digest(project.store_url))
        assert not run_op_job(defs, instance, "dismiss_batch", "dismiss", {"batch": "good"}).success
        assert not run_op_job(defs, instance, "dismiss_batch", "dismiss",
                              {"batch": "no-such"}).success

        # A withdrawal made outside Dagster (the CLI): purge_store reports the refused batch that
        # still holds the sample, then deletes it when asked, and records the redaction.
        remove_samples(open_store(project.store_url), ["D00007"])
        reported = run_op_job(defs, instance, "purge_store", "purge_history", {})
        assert reported.success
        meta = output_metadata(reported, "purge_history")
        assert (meta["leftover_batches"], meta["leftover_batch_names"]) == (1, "overlaps")
        assert meta["leftovers_deleted"] is False and (project.inbox / "overlaps").exists()
        assert meta["redactions"] == "r1 → r1-r1"
        releases = {e.materialization.partition: e.materialization.metadata["state"].value
                    for e in reported.get_asset_materialization_events()
                    if e.materialization.asset_key == dg.AssetKey("store_release")}
        assert releases == {"r1": "replaced", "r1-r1": "citable"}
        assert materializations(reported)["store_summary"]["releases_replaced"] == 1

        deleted = run_op_job(defs, instance, "purge_store", "purge_history",
                             {"delete_leftover_batches": True})
        assert output_metadata(deleted, "purge_history")["leftovers_deleted"] is True
        assert not (project.inbox / "overlaps").exists()
        assert not (project.staging / "overlaps").exists()
        assert "overlaps" not in instance.get_dynamic_partitions("batches")

        # The removal wrote its column at the fast level: recompress_store brings it back.
        fast = store_info(open_store(project.store_url)).fast_level
        assert fast is not None and fast.columns
        vcf_before = _vcf_text(project.store_url)
        recompressed = run_op_job(defs, instance, "recompress_store", "recompress", {})
        assert recompressed.success
        meta = output_metadata(recompressed, "recompress")
        assert meta["columns"] == len(fast.columns) and meta["chunks_rewritten"] > 0
        assert meta["bytes_after"] < meta["bytes_before"]
        assert materializations(recompressed)["store_summary"]["fast_level_columns"] == 0
        assert store_info(open_store(project.store_url)).fast_level is None
        assert _vcf_text(project.store_url) == vcf_before
        again = run_op_job(defs, instance, "recompress_store", "recompress", {})
        assert again.success and output_metadata(again, "recompress")["columns"] == 0
    assert {r.name: r.state for r in list_releases(open_store(project.store_url))} == {
        "r1": "replaced", "r1-r1": "citable"}
