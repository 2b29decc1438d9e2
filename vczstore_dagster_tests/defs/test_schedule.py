"""``release_schedule``: a release when main has moved since the last one, a reason otherwise; its
evaluation changes nothing (what "Preview tick result" runs), the run it requests does."""

from __future__ import annotations

import datetime

import dagster as dg

from vczstore_dagster_tests.defs.conftest import ingest, materializations
from vczstore_dagster_tests.helpers import tree_digest

MONDAY = datetime.datetime(2026, 11, 23, 6, 0, tzinfo=datetime.UTC)


def evaluate(defs, instance, when=MONDAY):
    schedule = defs.resolve_schedule_def("release_schedule")
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when,
                                        resources=defs.resources,
                                        repository_def=defs.get_repository_def())
    return schedule.evaluate_tick(context)


def run_request(defs, instance, request):
    """What the daemon does with the schedule's request: a tag_release run with its config."""
    return defs.resolve_job_def("tag_release").execute_in_process(
        run_config=request.run_config, tags=request.tags, instance=instance)


def test_weekly_release_only_when_something_changed(project, vcf_batch):
    defs = project.definitions()
    with dg.instance_for_test() as instance:
        no_store = evaluate(defs, instance)
        assert no_store.run_requests == [] and "No store" in no_store.skip_message

        project.drop_batch("batch-1", [vcf_batch("R", 6)])
        assert ingest(defs, instance, "batch-1").success
        store_before = tree_digest(project.store_url)
        first = evaluate(defs, instance)
        [request] = first.run_requests
        assert request.run_config == {"ops": {"tag_store": {"config": {"name": "2026-11-23"}}}}
        # A preview (or a tick that is never run) creates nothing: no partition, no tag.
        assert evaluate(defs, instance).run_requests == first.run_requests
        assert instance.get_dynamic_partitions("releases") == []
        assert tree_digest(project.store_url) == store_before

        result = run_request(defs, instance, request)
        assert instance.get_dynamic_partitions("releases") == ["2026-11-23"]
        meta = materializations(result)["store_release"]
        assert meta["active_samples"] == 6 and meta["state"] == "citable"
        assert "Release 2026-11-23" in meta["notes"]
        [citable] = result.get_asset_check_evaluations()
        assert (citable.check_name, citable.partition, citable.passed) == (
            "release_citable", "2026-11-23", True)
        assert materializations(result)["store_summary"]["releases_citable"] == 1

        unchanged = evaluate(defs, instance, MONDAY + datetime.timedelta(days=7))
        assert unchanged.run_requests == []
        assert unchanged.skip_message == "Nothing changed since release 2026-11-23."

        project.drop_batch("batch-2", [vcf_batch("T", 4)])
        assert ingest(defs, instance, "batch-2").success
        # Same day again (say, a manual tick): the name is not reused.
        [again] = evaluate(defs, instance).run_requests
        assert again.run_config["ops"]["tag_store"]["config"]["name"] == "2026-11-23.2"
        assert instance.get_dynamic_partitions("releases") == ["2026-11-23"]
