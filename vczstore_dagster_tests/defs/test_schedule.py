"""``release_schedule``: a release when main has moved since the last one, a reason otherwise."""

from __future__ import annotations

import datetime

import dagster as dg

from vczstore_dagster_tests.defs.conftest import ingest, materializations

MONDAY = datetime.datetime(2026, 11, 23, 6, 0, tzinfo=datetime.UTC)


def evaluate(defs, instance, when=MONDAY):
    schedule = defs.resolve_schedule_def("release_schedule")
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when,
                                        resources=defs.resources,
                                        repository_def=defs.get_repository_def())
    return schedule.evaluate_tick(context)


def test_weekly_release_only_when_something_changed(project, vcf_batch):
    defs = project.definitions()
    with dg.instance_for_test() as instance:
        no_store = evaluate(defs, instance)
        assert no_store.run_requests == [] and "No store" in no_store.skip_message

        project.drop_batch("batch-1", [vcf_batch("R", 6)])
        assert ingest(defs, instance, "batch-1").success
        first = evaluate(defs, instance)
        [request] = first.run_requests
        assert request.partition_key == "2026-11-23"
        assert instance.get_dynamic_partitions("releases") == ["2026-11-23"]
        result = defs.resolve_job_def("tag_release").execute_in_process(
            partition_key=request.partition_key, instance=instance)
        meta = materializations(result)["store_release"]
        assert meta["active_samples"] == 6
        assert "Release 2026-11-23" in meta["notes"]

        unchanged = evaluate(defs, instance, MONDAY + datetime.timedelta(days=7))
        assert unchanged.run_requests == []
        assert unchanged.skip_message == "Nothing changed since release 2026-11-23."

        project.drop_batch("batch-2", [vcf_batch("T", 4)])
        assert ingest(defs, instance, "batch-2").success
        # Same day again (say, a manual tick): the name is not reused.
        [again] = evaluate(defs, instance).run_requests
        assert again.partition_key == "2026-11-23.2"
