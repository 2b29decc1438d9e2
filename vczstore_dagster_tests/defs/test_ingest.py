"""Per-partition materialization in-process, on a real SQLite instance and a real Icechunk store."""

from __future__ import annotations

import time

import dagster as dg
from dagster._core.storage.partition_status_cache import AssetPartitionStatus

from vczstore_dagster import testdata
from vczstore_dagster.defs.partitions import batches
from vczstore_dagster.dev import sites_with_extra_alleles
from vczstore_dagster.store import open_store, store_info
from vczstore_dagster_tests.defs.conftest import check_evaluations, ingest, materializations, tag
from vczstore_dagster_tests.helpers import (
    assert_matches_bcftools,
    assert_unchanged,
    tree_digest,
)


def test_first_batch_creates_the_store_and_a_good_batch_appends(project, vcf_batch):
    first = vcf_batch("A", 12)
    second = vcf_batch("B", 9)
    project.drop_batch("batch-a", [first])
    project.drop_batch("batch-b", [second])
    defs = project.definitions()
    with dg.instance_for_test() as instance:
        created = ingest(defs, instance, "batch-a")
        assert created.success
        started = time.perf_counter()
        appended = ingest(defs, instance, "batch-b")
        elapsed = time.perf_counter() - started
        assert appended.success

    assert materializations(created)["vcz_store"]["created_store"] is True
    meta = materializations(appended)
    assert meta["incoming_batch"]["num_samples"] == 9
    assert meta["staged_batch"]["schema"] == "the store's"
    store_meta = meta["vcz_store"]
    assert (store_meta["samples_before"], store_meta["samples_after"]) == (12, 21)
    assert store_meta["snapshot_id"]
    assert store_meta["bytes_copied"] > 0
    assert store_meta["fast_path"] is True  # staged in the store's schema and sample grid
    assert 0 < store_meta["duration_seconds"] < elapsed  # the append, within the whole run
    checks = check_evaluations(appended)
    assert set(checks) == {"batch_is_readable", "variants_match_store", "fields_match_store",
                           "samples_are_new", "store_consistent"}
    assert all(e.passed for e in checks.values())
    assert {e.partition for e in checks.values()} == {"batch-b"}

    store = open_store(project.store_url)
    assert [b.batch_id for b in store_info(store).batches] == ["batch-a", "batch-b"]
    assert_matches_bcftools(store, [first, second])


def test_bad_batch_fails_variants_match_store_and_leaves_the_store_unchanged(
        project, vcf_batch, tmp_path):
    project.drop_batch("good", [vcf_batch("G", 10)])
    # Calls ALT alleles the store's fixed variant set does not have (as make dev's bad batch).
    bad = testdata.write_vcf(tmp_path / "bad.vcf", testdata.sample_names("O", 6),
                             sites=sites_with_extra_alleles(num_variants=100))
    project.drop_batch("other-panel", [bad])
    defs = project.definitions()
    with dg.instance_for_test() as instance:
        assert ingest(defs, instance, "good").success
        before = tree_digest(project.store_url)
        result = ingest(defs, instance, "other-panel")
        assert not result.success
        assert "vcz_store" not in materializations(result)
        checks = check_evaluations(result)
        failed = checks["variants_match_store"]
        assert not failed.passed
        assert failed.partition == "other-panel"
        assert "variant" in failed.description
        assert checks["samples_are_new"].passed
        # The refusal is the batch's: the run that planned vcz_store[other-panel] ended well
        # and appended nothing, so no partition of vcz_store is failed (Dagster counts a
        # partition failed when a failed run planned it); staged_batch[other-panel] is
        # materialized, with its failed check.
        assert result.appended is False and result.finished
        assert result.refused == "variants_match_store"
        [run] = result.results
        planned = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records
        assert {r.event_log_entry.dagster_event.asset_key.to_user_string() for r in planned} == {
            "incoming_batch", "staged_batch", "vcz_store"}
        status = instance.get_status_by_partition(
            dg.AssetKey("vcz_store"), ["good", "other-panel"], batches
        )
        assert status == {"good": AssetPartitionStatus.MATERIALIZED, "other-panel": None}
        assert instance.get_status_by_partition(
            dg.AssetKey("staged_batch"), ["other-panel"], batches
        ) == {"other-panel": AssetPartitionStatus.MATERIALIZED}
    assert_unchanged(before, tree_digest(project.store_url))
    assert "O00000" not in store_text_ids(project)


def test_batch_with_a_sample_already_in_the_store_fails_samples_are_new(project, vcf_batch):
    project.drop_batch("first", [vcf_batch("S", 8)])
    project.drop_batch("again", [vcf_batch("S", 4, start=6)])  # S00006, S00007 overlap
    defs = project.definitions()
    with dg.instance_for_test() as instance:
        assert ingest(defs, instance, "first").success
        before = tree_digest(project.store_url)
        result = ingest(defs, instance, "again")
    checks = check_evaluations(result)
    assert not result.success
    assert not checks["samples_are_new"].passed
    assert checks["variants_match_store"].passed
    # The reason is readable and names no sample.
    assert "already in the store" in checks["samples_are_new"].description
    assert "S0000" not in checks["samples_are_new"].description
    assert_unchanged(before, tree_digest(project.store_url))


def store_text_ids(project) -> list[str]:
    import numpy as np

    group = open_store(project.store_url).readonly_group()
    return [str(s) for s in np.asarray(group["sample_id"][...])]


def test_batch_after_a_release_appends(project, vcf_batch):
    project.drop_batch("before", [vcf_batch("P", 6)])
    project.drop_batch("after", [vcf_batch("Q", 5)])
    defs = project.definitions()
    with dg.instance_for_test() as instance:
        assert ingest(defs, instance, "before").success
        assert tag(defs, instance, "r1").success
        result = ingest(defs, instance, "after")
    assert result.success, [e.event_specific_data.error.message for e in result.all_events
                            if e.is_step_failure]


def test_vcz_batch_is_staged_as_is_and_creates_the_store(project, vcf_batch):
    vcf = vcf_batch("Z", 5)
    project.drop_vcz_batch("vcz-batch", [vcf], "cohort-part.vcz", samples_chunk_size=4)
    defs = project.definitions()
    with dg.instance_for_test() as instance:
        result = ingest(defs, instance, "vcz-batch")
    assert result.success
    meta = materializations(result)
    assert meta["incoming_batch"]["kind"] == "vcz"
    assert meta["incoming_batch"]["num_samples"] == 5
    assert meta["staged_batch"]["converted"] is False
    assert meta["vcz_store"]["samples_after"] == 5
    assert_matches_bcftools(open_store(project.store_url), [vcf])


def _drop_every_tenth_record(text: str) -> str:
    lines = text.splitlines(keepends=True)
    records = [i for i, line in enumerate(lines) if not line.startswith("#")]
    dropped = set(records[::10])
    return "".join(line for i, line in enumerate(lines) if i not in dropped)


def test_batches_are_harmonised_and_counted(project, vcf_batch):
    first = vcf_batch("H", 6)
    lacking = vcf_batch("I", 5, edit=_drop_every_tenth_record)
    as_vcz = vcf_batch("J", 4)
    project.drop_batch("first", [first])
    project.drop_batch("lacking", [lacking])
    project.drop_vcz_batch("as-vcz", [as_vcz], "part.vcz", samples_chunk_size=3)
    defs = project.definitions()
    with dg.instance_for_test() as instance:
        assert ingest(defs, instance, "first").success
        result = ingest(defs, instance, "lacking")
        assert result.success
        staged = materializations(result)["staged_batch"]
        assert staged["harmonisation_missing_filled"] == 10  # 100 sites, every tenth dropped
        assert staged["harmonisation_dropped"] == 0
        result = ingest(defs, instance, "as-vcz")
        assert result.success
        meta = materializations(result)
    assert meta["staged_batch"]["harmonisation_missing_filled"] == 0
    assert meta["vcz_store"]["samples_after"] == 15
    info = store_info(open_store(project.store_url))
    assert [b.batch_id for b in info.batches] == ["first", "lacking", "as-vcz"]
