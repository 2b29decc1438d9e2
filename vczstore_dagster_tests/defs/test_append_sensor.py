"""From a checked batch to the store: ``append_sensor`` (a run status sensor) requests
``append_batch`` only for a batch whose blocking checks all passed, and has a batch checked again
when the store moved on under it; ``inbox_sensor`` sends one batch at a time until the store
exists. Real runs on a real SQLite instance; the sensors evaluated as the daemon would."""

from __future__ import annotations

import dagster as dg
from dagster._core.storage.partition_status_cache import AssetPartitionStatus

from vczstore_dagster.defs.partitions import batches
from vczstore_dagster.store import open_store, store_info
from vczstore_dagster_tests.defs.conftest import check_evaluations, materializations
from vczstore_dagster_tests.defs.test_sensors import tick


def run_job(defs, instance, job: str, batch: str, **kwargs):
    instance.add_dynamic_partitions("batches", [batch])
    return defs.resolve_job_def(job).execute_in_process(
        partition_key=batch, instance=instance, raise_on_error=False, **kwargs)


def after(defs, instance, result):
    """``append_sensor``'s answer to a finished run."""
    sensor = defs.resolve_sensor_def("append_sensor")
    run = instance.get_run_by_id(result.run_id)
    event = next(e for e in result.all_events
                 if e.event_type in (dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE))
    context = dg.build_run_status_sensor_context(
        sensor_name="append_sensor", dagster_event=event, dagster_instance=instance,
        dagster_run=run, resources=defs.resources, repository_def=defs.get_repository_def())
    return sensor(context)


def status(instance, asset: str, batch: str):
    return instance.get_status_by_partition(dg.AssetKey(asset), [batch], batches)[batch]


def test_append_is_requested_only_for_a_batch_whose_checks_passed(project, vcf_batch):
    project.drop_batch("good", [vcf_batch("G", 6)])
    project.drop_batch("again", [vcf_batch("G", 3, start=4)])  # G00004, G00005 are in "good"
    defs = project.definitions()
    with dg.instance_for_test() as instance:
        staged = run_job(defs, instance, "ingest_batch", "good")
        assert staged.success
        [request] = after(defs, instance, staged)
        assert (request.job_name, request.partition_key) == ("append_batch", "good")
        appended = run_job(defs, instance, "append_batch", "good")
        assert appended.success
        skipped = after(defs, instance, appended)
        assert isinstance(skipped, dg.SkipReason) and "staged no batch" in skipped.skip_message

        refused = run_job(defs, instance, "ingest_batch", "again")
        assert not refused.success
        assert not check_evaluations(refused)["samples_are_new"].passed
        assert isinstance(after(defs, instance, refused), dg.SkipReason)
        assert status(instance, "vcz_store", "again") is None  # not failed: never planned
        assert status(instance, "vcz_store", "good") == AssetPartitionStatus.MATERIALIZED


def test_a_batch_is_checked_again_when_the_store_moved_on(project, vcf_batch):
    """Two batches staged and checked against the same store, sharing a sample: the second
    append finds it in the store, writes nothing and does not fail the store; the batch is
    checked again, and refused at its own check."""
    project.drop_batch("first", [vcf_batch("M", 4)])
    project.drop_batch("left", [vcf_batch("L", 3)])
    project.drop_batch("right", [vcf_batch("L", 3, start=2)])  # shares L00002 with "left"
    defs = project.definitions()
    with dg.instance_for_test() as instance:
        assert run_job(defs, instance, "ingest_batch", "first").success
        assert run_job(defs, instance, "append_batch", "first").success
        left, right = (run_job(defs, instance, "ingest_batch", b) for b in ("left", "right"))
        assert left.success and right.success  # both fit the store they were checked against
        assert run_job(defs, instance, "append_batch", "left").success
        moved_on = run_job(defs, instance, "append_batch", "right")
        assert moved_on.success and "vcz_store" not in materializations(moved_on)
        assert status(instance, "vcz_store", "right") is None
        [request] = after(defs, instance, moved_on)
        assert (request.job_name, request.partition_key) == ("ingest_batch", "right")
        assert request.run_config["ops"]["staged_batch"]["config"]["allow_new_alleles"] is False
        recheck = run_job(defs, instance, "ingest_batch", "right", run_config=request.run_config)
        assert not recheck.success
        assert not check_evaluations(recheck)["samples_are_new"].passed
        assert isinstance(after(defs, instance, recheck), dg.SkipReason)
    assert [b.batch_id for b in store_info(open_store(project.store_url)).batches] == [
        "first", "left"]


def test_one_batch_at_a_time_until_the_store_exists(project, vcf_batch):
    for name in ("b-1", "b-2", "b-3"):
        project.drop_batch(name, [vcf_batch(name.upper(), 3)])
    defs = project.definitions()
    with dg.instance_for_test() as instance:
        first = tick(defs, instance, "inbox_sensor", None)
        assert [r.partition_key for r in first.run_requests] == ["b-1"]
        assert run_job(defs, instance, "ingest_batch", "b-1").success
        held = tick(defs, instance, "inbox_sensor", None)  # staged, its append not yet run
        assert held.run_requests == []
        assert "Waiting for the first batch to create the store: b-2, b-3" in held.skip_message
        assert run_job(defs, instance, "append_batch", "b-1").success
        rest = tick(defs, instance, "inbox_sensor", None)
        assert [r.partition_key for r in rest.run_requests] == ["b-2", "b-3"]
