"""A withdrawal run removes the samples, and their IDs end up nowhere in the Dagster instance."""

from __future__ import annotations

import gzip
import json
import pathlib

import dagster as dg

from vczstore_dagster.store import list_releases, open_store, schema
from vczstore_dagster.store.ledger import read_ledger
from vczstore_dagster_tests.defs.conftest import ingest, materializations, tag
from vczstore_dagster_tests.defs.test_sensors import tick
from vczstore_dagster_tests.helpers import assert_matches_bcftools


def sample_ids(store, at=None) -> list[str]:
    return [str(s) for s in schema.strings(store.readonly_group(at)["sample_id"][...])]


def files_containing(root: pathlib.Path, needles: list[str]) -> list[str]:
    """Every file under ``root`` holding any of ``needles`` (as UTF-8 bytes; gzip and bgzip files
    are searched decompressed too)."""
    hits = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if data[:2] == b"\x1f\x8b":
                try:
                    data += gzip.decompress(data)
                except (OSError, EOFError):
                    pass
            hits += [f"{path.relative_to(root)}: {n}" for n in needles if n.encode() in data]
    return hits


def test_withdrawal_removes_samples_and_leaves_no_id_behind(project, vcf_batch, tmp_path):
    first = vcf_batch("WDRAWN-", 10)
    second = vcf_batch("KEEPER-", 6)
    withdrawn = ["WDRAWN-00002", "WDRAWN-00007"]
    project.drop_batch("batch-a", [first])
    project.drop_batch("batch-b", [second])
    # Refused (its samples are in the store already), so it waits in the inbox and staging,
    # holding a sample that is about to be withdrawn.
    project.drop_batch("again", [vcf_batch("WDRAWN-", 3, start=1)])
    defs = project.definitions()
    home = tmp_path / "dagster_home"
    home.mkdir()
    folders = [project.inbox, project.staging, project.withdrawals, home]
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        assert ingest(defs, instance, "batch-a").success
        assert ingest(defs, instance, "batch-b").success
        assert not ingest(defs, instance, "again").success
        release = tag(defs, instance, "r1")
        assert materializations(release)["store_release"]["active_samples"] == 16

        project.request_withdrawal("request-1", withdrawn)
        # Positive control: the search finds the IDs where they are.
        found = files_containing(project.root, withdrawn)
        assert {f.split("/")[0] for f in found} == {"inbox", "staging", "withdrawals"}, found
        requested = tick(defs, instance, "withdrawal_sensor", None)
        [run_request] = requested.run_requests
        result = defs.resolve_job_def("withdraw_samples").execute_in_process(
            partition_key=run_request.partition_key, tags=run_request.tags, instance=instance)
        assert result.success
        meta = materializations(result)["sample_withdrawals"]
        events = result.get_asset_materialization_events()
        releases = {e.materialization.partition: {k: v.value for k, v in
                                                  e.materialization.metadata.items()}
                    for e in events if e.materialization.asset_key == dg.AssetKey("store_release")}
        citable = {e.partition: e.passed for e in result.get_asset_check_evaluations()}
        assert instance.get_dynamic_partitions("releases") == ["r1", "r1-r1"]
        assert "again" not in instance.get_dynamic_partitions("batches")

    assert meta["samples_requested"] == 2
    assert meta["samples_removed"] == 2
    assert meta["releases_redacted"] == 1
    assert meta["redactions"] == "r1 → r1-r1"
    assert (meta["leftover_batches"], meta["leftover_batch_names"]) == (1, "again")
    assert meta["leftover_withdrawn_samples"] == 1
    # Both sides of the redaction are recorded on store_release.
    assert (releases["r1"]["state"], releases["r1"]["replaced_by"]) == ("replaced", "r1-r1")
    assert releases["r1"]["citable"] is False and "samples_redacted" not in releases["r1"]
    assert (releases["r1-r1"]["state"], releases["r1-r1"]["replaces"]) == ("citable", "r1")
    assert releases["r1-r1"]["active_samples"] == 14 and releases["r1-r1"]["samples_redacted"] == 2
    assert releases["r1-r1"]["redacted_at"]
    assert citable == {"r1": False, "r1-r1": True}
    summary = materializations(result)["store_summary"]
    assert (summary["total_samples"], summary["active_samples"]) == (16, 14)
    assert (summary["releases_citable"], summary["releases_replaced"]) == (1, 1)

    store = open_store(project.store_url)
    assert not set(withdrawn) & set(sample_ids(store))
    assert_matches_bcftools(store, [first, second], removed=withdrawn)
    assert {r.name: (r.state, r.replaced_by) for r in list_releases(store)} == {
        "r1": ("replaced", "r1-r1"), "r1-r1": ("citable", None)}
    assert not set(withdrawn) & set(sample_ids(store, at="r1-r1"))

    # The request file is replaced by a receipt: counts and the store's salted hashes.
    assert sorted(p.name for p in project.withdrawals.iterdir()) == ["request-1.receipt.json"]
    receipt = json.loads((project.withdrawals / "request-1.receipt.json").read_text())
    ledger = read_ledger(store.readonly_group())
    assert receipt["sample_hashes"] == sorted(ledger.hash_sample(s) for s in withdrawn)
    assert set(receipt["sample_hashes"]) <= set(ledger.withdrawn)
    assert (receipt["samples_removed"], receipt["snapshot_id"]) == (2, meta["snapshot_id"])
    # The instance really recorded these runs (the search below is not vacuous)...
    assert any(p.suffix == ".db" for p in home.rglob("*")), sorted(home.rglob("*"))
    assert files_containing(home, ["sample_withdrawals", "request-1", "batch-a"])
    # ... and no withdrawn ID is left in the inbox, staging, withdrawals folder or the instance.
    for folder in folders:
        assert files_containing(folder, withdrawn) == [], folder
    # Nor is any other sample ID in the instance: counts only.
    assert files_containing(home, ["WDRAWN-0000", "KEEPER-0000"]) == []
    # The appended batches' inbox folders and staged copies are gone; so is the refused one.
    assert list(project.staging.iterdir()) == []
    assert list(project.inbox.iterdir()) == []


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
