"""The ``store_consistent`` check shows a real audit failure: the staged batch is rewritten by
another writer while ``vcz_store`` appends it (held at the engine's ``write`` pause point), the
audit refuses the commit, the check fails with the audit's reason, and main does not move."""

from __future__ import annotations

import threading

import dagster as dg
import zarr

from vczstore_dagster.store import open_store, store_info
from vczstore_dagster_tests import helpers
from vczstore_dagster_tests.defs.conftest import check_evaluations, ingest, materializations


def test_store_consistent_fails_when_the_audit_refuses(project, vcf_batch, tmp_path, monkeypatch):
    project.drop_batch("batch-a", [vcf_batch("A", 10)])
    project.drop_batch("batch-b", [vcf_batch("B", 6)])
    defs = project.definitions()
    marker, until = tmp_path / "paused", tmp_path / "go"
    staged = project.staging / "batch-b" / "batch-b.vcz"

    def rewrite_the_staged_batch():
        helpers.wait_for_pass(marker, 1, None)
        group = zarr.open_group(str(staged), mode="r+")
        group["sample_id"][:] = [f"Z{i:05d}" for i in range(group["sample_id"].shape[0])]
        helpers.release_pass(until, 1)

    with dg.instance_for_test() as instance:
        assert ingest(defs, instance, "batch-a").success
        store = open_store(project.store_url)
        before = (store.main_snapshot(), helpers.sample_ids(store))
        for key, value in helpers.pause_env("write", marker, until).items():
            monkeypatch.setenv(key, value)
        other = threading.Thread(target=rewrite_the_staged_batch)
        other.start()
        result = ingest(defs, instance, "batch-b")
        other.join(timeout=60)
        assert not result.success
        assert "vcz_store" not in materializations(result)
        check = check_evaluations(result)["store_consistent"]
        assert (check.passed, check.partition) == (False, "batch-b")
        assert "AuditError: audit: the appended sample ids differ from the batch's" in \
            check.description, check.description

    store = open_store(project.store_url)
    assert (store.main_snapshot(), helpers.sample_ids(store)) == before
    assert [b.batch_id for b in store_info(store).batches] == ["batch-a"]
