"""A withdrawal run removes the samples, and their IDs end up nowhere in the Dagster instance."""

from __future__ import annotations

import pathlib

import dagster as dg

from vczstore_dagster.store import list_releases, open_store, schema
from vczstore_dagster_tests.defs.conftest import ingest, materializations, tag
from vczstore_dagster_tests.defs.test_sensors import tick
from vczstore_dagster_tests.helpers import assert_matches_bcftools


def sample_ids(store, at=None) -> list[str]:
    return [str(s) for s in schema.strings(store.readonly_group(at)["sample_id"][...])]


def files_containing(root: pathlib.Path, needles: list[str]) -> list[str]:
    """Every file under ``root`` holding any of ``needles`` (as UTF-8 bytes)."""
    hits = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path.relative_to(root)}: {n}" for n in needles if n.encode() in data]
    return hits


def test_withdrawal_removes_samples_and_leaves_no_id_in_the_instance(project, vcf_batch, tmp_path):
    first = vcf_batch("WDRAWN-", 10)
    second = vcf_batch("KEEPER-", 6)
    withdrawn = ["WDRAWN-00002", "WDRAWN-00007"]
    project.drop_batch("batch-a", [first])
    project.drop_batch("batch-b", [second])
    defs = project.definitions()
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        assert ingest(defs, instance, "batch-a").success
        assert ingest(defs, instance, "batch-b").success
        release = tag(defs, instance, "r1")
        assert materializations(release)["store_release"]["active_samples"] == 16

        project.request_withdrawal("request-1", withdrawn)
        requested = tick(defs, instance, "withdrawal_sensor", None)
        [run_request] = requested.run_requests
        result = defs.resolve_job_def("withdraw_samples").execute_in_process(
            partition_key=run_request.partition_key, tags=run_request.tags, instance=instance)
        assert result.success
        meta = materializations(result)["sample_withdrawals"]

    assert meta["samples_requested"] == 2
    assert meta["samples_removed"] == 2
    assert meta["releases_redacted"] == 1
    assert meta["redactions"] == "r1 → r1-r1"

    store = open_store(project.store_url)
    assert not set(withdrawn) & set(sample_ids(store))
    assert_matches_bcftools(store, [first, second], removed=withdrawn)
    assert {r.name: (r.state, r.replaced_by) for r in list_releases(store)} == {
        "r1": ("replaced", "r1-r1"), "r1-r1": ("citable", None)}
    assert not set(withdrawn) & set(sample_ids(store, at="r1-r1"))

    # The instance really recorded these runs (the search below is not vacuous)...
    assert any(p.suffix == ".db" for p in home.rglob("*")), sorted(home.rglob("*"))
    assert files_containing(home, ["sample_withdrawals", "request-1", "batch-a"])
    # ... and no withdrawn ID is in its run storage, event logs or anything else it keeps.
    assert files_containing(home, withdrawn) == []
    # Nor is any other sample ID: counts only.
    assert files_containing(home, ["WDRAWN-0000", "KEEPER-0000"]) == []
    # The staged copies are gone once appended.
    assert list(project.staging.iterdir()) == []


def test_unknown_sample_fails_with_a_redacted_reason(project, vcf_batch, tmp_path):
    project.drop_batch("batch-a", [vcf_batch("A", 5)])
    defs = project.definitions()
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        assert ingest(defs, instance, "batch-a").success
        project.request_withdrawal("typo", ["NOSUCH-SAMPLE-17"])
        instance.add_dynamic_partitions("withdrawals", ["typo"])
        result = defs.resolve_job_def("withdraw_samples").execute_in_process(
            partition_key="typo", instance=instance, raise_on_error=False)
        assert not result.success
        [failure] = [e for e in result.all_events if e.is_step_failure]
        message = failure.event_specific_data.error.message
        assert "removing the samples failed" in message
        assert "<sample>" in message
    assert files_containing(home, ["NOSUCH-SAMPLE-17"]) == []
