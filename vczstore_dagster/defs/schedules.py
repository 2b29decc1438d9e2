"""``release_schedule``: a weekly release, skipped when nothing changed since the last one."""

import dagster as dg

from vczstore_dagster.defs.jobs import tag_release
from vczstore_dagster.defs.partitions import releases
from vczstore_dagster.defs.resources import VczStoreResource
from vczstore_dagster.store import list_releases

CRON = "0 6 * * 1"  # Mondays, 06:00 UTC


def unused_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base.2``, ``base.3``... (tag names can never be reused, even once deleted)."""
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}.{n}"
    return name


@dg.schedule(
    job=tag_release,
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
    made = list_releases(opened)
    head = opened.main_snapshot()
    current = [r.name for r in made if r.snapshot_id == head]
    if current:
        return dg.SkipReason(f"Nothing changed since release {current[-1]}.")
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    taken = {r.name for r in made} | set(opened.repo.list_tags())
    taken |= set(context.instance.get_dynamic_partitions(releases.name))
    name = unused_name(day, taken)
    # Schedules cannot return partition requests (sensors can): add the partition here.
    context.instance.add_dynamic_partitions(releases.name, [name])
    return dg.RunRequest(partition_key=name, run_key=name)
