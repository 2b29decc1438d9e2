"""``release_schedule``: a weekly release, skipped when nothing changed since the last one.

Its evaluation changes nothing (a "Preview tick result" in the UI is only a preview): it reads
the store and the instance, picks the release's name and asks for a ``tag_release`` run with that
name in its config; the run tags the store, adds the ``releases`` partition and records
``store_release[name]``.
"""

import dagster as dg

from vczstore_dagster.defs.assets.releases import dated_name, tag_release_job, tag_store
from vczstore_dagster.defs.resources import VczStoreResource
from vczstore_dagster.store import list_releases

CRON = "0 6 * * 1"  # Mondays, 06:00 UTC


@dg.schedule(
    job=tag_release_job,
    cron_schedule=CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Weekly release of the store, named after the day; skipped if main has not moved.",
)
def release_schedule(context: dg.ScheduleEvaluationContext, store: VczStoreResource):
    opened = store.open_if_exists()
    if opened is None:
        return dg.SkipReason(f"No store at {store.url} yet.")
    if opened.backend != "icechunk":
        return dg.SkipReason("Releases need an Icechunk store; this one is plain Zarr.")
    head = opened.main_snapshot()
    current = [r.name for r in list_releases(opened) if r.snapshot_id == head]
    if current:
        return dg.SkipReason(f"Nothing changed since release {current[-1]}.")
    name = dated_name(context.scheduled_execution_time, opened, context.instance)
    return dg.RunRequest(run_key=name, tags={"vczstore/release": name},
                         run_config={"ops": {tag_store.name: {"config": {"name": name}}}})
