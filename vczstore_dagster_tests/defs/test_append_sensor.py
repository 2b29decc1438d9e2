"""From a checked batch to the store: ``ingest_batch`` stages, checks and appends in one run, and
appends nothing for a refused batch (the run ends well: the store is not failed);
``append_sensor`` (a run status sensor) requests ``append_batch`` for a batch staged and checked
by a run that did not append it (``staged_batch`` materialized alone), and has a batch checked
again when the store moved on under it; ``inbox_sensor`` sends one batch at a time until the
store exists. Real runs on a real SQLite instance; the sensors evaluated as the daemon would."""

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


def stage_only(defs, instance, batch: str):
    """``staged_batch[B]`` and its checks materialized alone, as from the asset's page."""
    instance.add_dynamic_partitions("batches", [batch])
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        partition_key=batch, instance=instance, raise_on_error=False,
        asset_selection=[dg.AssetKey("incoming_batch"), dg.AssetKey("staged_batch")])


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


def test_one_run_appends_a_good_batch_and_nothing_of_a_refused_one(project, vcf_batch):
    project.drop_batch("good", [vcf_batch("G", 6)])
    project.drop_batch("again", [vcf_batch("G", 3, start=4)])  # G00004, G00005 are in "good"
    defs = project.definitions()
    with dg.instance_for_test() as instance:
        ingested = run_job(defs, instance, "ingest_batch", "good")
        assert ingested.success and "vcz_store" in materializations(ingested)
        skipped = after(defs, instance, ingested)
        assert isinstance(skipped, dg.SkipReason) and "no checked batch" in skipped.skip_message

        refused = run_job(defs, instance, "ingest_batch", "again")
        assert refused.success and "vcz_store" not in materializations(refused)
        assert not check_evaluations(refused)["samples_are_new"].passed
        assert instance.get_run_by_id(refused.run_id).tags["vczstore/refused"] == "samples_are_new"
        assert isinstance(after(defs, instance, refused), dg.SkipReason)
        assert status(instance, "vcz_store", "again") is None  # planned, not failed
        assert status(instance, "vcz_store", "good") == AssetPartitionStatus.MATERIALIZED
        assert [b.batch_id for b in store_info(open_store(project.store_url)).batches] == ["good"]


def test_append_is_requested_for_a_batch_staged_alone(project, vcf_batch):
    project.drop_batch("first", [vcf_batch("F", 4)])
    project.drop_batch("alone", [vcf_batch("A", 3)])
    defs = project.definitions()
    with dg.instance_for_test() as instance:
        assert run_job(defs, instance, "ingest_batch", "first").success
        staged = stage_only(defs, instance, "alone")
        assert staged.success and set(check_evaluations(staged)) >= {"samples_are_new"}
        [request] = after(defs, instance, staged)
        assert (request.job_name, request.partition_key) == ("append_batch", "alone")
        assert run_job(defs, instance, "append_batch", "alone").success
        assert [b.batch_id for b in store_info(open_store(project.store_url)).batches] == [
            "first", "alone"]


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
        left, right = (stage_only(defs, instance, b) for b in ("left", "right"))
        assert left.success and right.success  # both fit the store they were checked against
        assert run_job(defs, instance, "append_batch", "left").success
        moved_on = run_job(defs, instance, "append_batch", "right")
        assert moved_on.success and "vcz_store" not in materializations(moved_on)
        assert status(instance, "vcz_store", "right") is None
        [request] = after(defs, instance, moved_on)
        assert (request.job_name, request.partition_key) == ("ingest_batch", "right")
        assert request.run_config["ops"]["staged_batch"]["config"]["allow_new_alleles"] is False
        recheck = run_job(defs, instance, "ingest_batch", "right", run_config=request.run_config)
        assert recheck.success and "vcz_store" not in materializations(recheck)
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
        queued = instance.create_run_for_job(defs.resolve_job_def("ingest_batch"),
                                             tags={"dagster/partition": "b-1"})
        held = tick(defs, instance, "inbox_sensor", None)  # b-1's run not yet ended
        assert held.run_requests == []
        assert "Waiting for the first batch to create the store: b-2, b-3" in held.skip_message
        instance.delete_run(queued.run_id)
        assert run_job(defs, instance, "ingest_batch", "b-1").success
        rest = tick(defs, instance, "inbox_sensor", None)
        assert [r.partition_key for r in rest.run_requests] == ["b-2", "b-3"]
