"""Sensors: a ready batch in the inbox → ``ingest_batch`` (stage, check, append); a batch staged
and checked but not appended by its run, or whose append found the store moved on →
``append_batch`` or ``ingest_batch`` again; a new request file → ``withdraw_samples``.

A batch runs once: ``inbox_sensor`` skips folders that are partitions of ``batches`` already (a
dismissed batch's partition is removed, so a folder of that name is a new batch again);
``withdrawal_sensor`` keeps the requests it has seen in its cursor. The partition is added and
the run requested in the same tick.
"""

import json

import dagster as dg

from vczstore_dagster.defs import partitions
from vczstore_dagster.defs.assets.store import MOVED_ON
from vczstore_dagster.defs.assets.withdrawals import REQUEST_SUFFIX
from vczstore_dagster.defs.checks import all_passed, load_settings, verdicts_in_run
from vczstore_dagster.defs.inbox import READY_MARKER, batch_folders, describe_batch
from vczstore_dagster.defs.jobs import append_batch, ingest_batch, withdraw_samples
from vczstore_dagster.defs.partitions import printable, unsafe_key_reason
from vczstore_dagster.defs.resources import (
    InboxResource,
    StagingResource,
    VczStoreResource,
    WithdrawalsResource,
)
from vczstore_dagster.store.remove import parse_sample_list

# The daemon's loop evaluates sensors every 5 s. Dagster counts a sensor's interval from the end of
# its last tick, so an interval of 5 s skips every other loop whenever a tick takes time (a run
# request does): the append waited 8 s on average after its batch's checks. 1 s: every loop.
INTERVAL_SECONDS = 1
SHOWN = 10


def _seen(cursor: str | None) -> set[str]:
    return set(json.loads(cursor)) if cursor else set()


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def _result(context, partitions_def, new: list[str], seen: set[str] | None, notes: list[str],
            nothing: str, tags: dict[str, dict[str, str]] | None = None) -> dg.SensorResult:
    cursor = json.dumps(sorted(seen | set(new))) if seen is not None else None
    if not new:
        return dg.SensorResult(skip_reason=" ".join([nothing, *notes]), cursor=cursor)
    for note in notes:  # a tick that requests runs has no skip reason: say it in the tick's log
        context.log.warning(note)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(partition_key=key, run_key=key, tags=(tags or {}).get(key, {})) for key in new
        ],
        dynamic_partitions_requests=[partitions_def.build_add_request(new)],
        cursor=cursor,
    )


@dg.sensor(
    job=ingest_batch,
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        f"A batch is a folder in the inbox holding VCF file(s) or one VCZ, ready once it holds "
        f"{READY_MARKER}. Each ready batch becomes a partition of 'batches' and one ingest_batch run "
        "(stage, check, append). While no store exists, one batch at a time: the first creates it."
    ),
)
def inbox_sensor(context: dg.SensorEvaluationContext, inbox: InboxResource,
                 store: VczStoreResource) -> dg.SensorResult:
    seen = set(context.instance.get_dynamic_partitions(partitions.batches.name))
    new, waiting, unsafe, not_batches = [], [], [], []
    kinds = {}
    for name in batch_folders(inbox):
        if name in seen:
            continue
        reason = unsafe_key_reason(name)
        if reason:
            unsafe.append(f"{printable(name)} ({reason})")
            continue
        folder = describe_batch(inbox, name)
        if not folder.ready:
            waiting.append(name)
        elif folder.problem:
            not_batches.append(f"{name} ({folder.problem})")
        else:
            new.append(name)
            kinds[name] = {"vczstore/batch_kind": folder.kind}
    notes = []
    new, held = _one_until_the_store_exists(context.instance, store, seen, new)
    if held:
        notes.append(f"Waiting for the first batch to create the store: {_listed(held)}.")
    if unsafe:
        notes.append(f"Never ingested, the folder name is not a safe batch id: {_listed(unsafe)}.")
    if not_batches:
        notes.append(f"Ready but not a batch: {_listed(not_batches)}.")
    if waiting:
        notes.append(f"Waiting for {READY_MARKER}: {_listed(waiting)}.")
    return _result(context, partitions.batches, new, None, notes, "No new ready batch in the inbox.",
                   kinds)


def _one_until_the_store_exists(instance, store: VczStoreResource, seen: set[str],
                                new: list[str]) -> tuple[list[str], list[str]]:
    """(batches to request now, batches held back). Batches staged before the store exists are
    converted in their own schema and checked against nothing: the first batch creates the store,
    and the others wait for it (unless it ended without creating it: then the next one goes)."""
    if not new or store.open_if_exists() is not None:
        return new, []
    if any(_on_its_way(instance, batch) for batch in seen):
        return [], new
    return new[:1], new[1:]


def _on_its_way(instance, batch: str) -> bool:
    """A run for ``batch`` is queued or running, or its checks passed and its append is due."""
    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": batch}), limit=1)
    if not runs:
        return False
    run = runs[0]
    return not run.is_finished or (run.is_success and batch in _unappended_batches(instance, run.run_id))


def _events(instance, run_id: str, event_type) -> list:
    return [r.event_log_entry.dagster_event for r in
            instance.get_records_for_run(run_id, of_type=event_type, limit=1000).records]


def _unappended_batches(instance, run_id: str) -> list[str]:
    """Batches this run staged and whose checks all passed in it, but for which it did not run
    ``vcz_store`` (``staged_batch`` materialized alone, from the UI)."""
    staged = {e.partition for e in _events(instance, run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)
              if e.asset_key == dg.AssetKey("staged_batch")}
    planned = {e.asset_key for e in
               _events(instance, run_id, dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)}
    if dg.AssetKey("vcz_store") in planned:
        return []
    verdicts = verdicts_in_run(instance, run_id)
    return sorted(b for b in staged if all_passed(verdicts.get(b, {})))


def _recheck_config(staging: StagingResource, store: VczStoreResource, batch: str) -> dict:
    thresholds, allow_new_alleles = load_settings(staging, batch, store)
    return {"ops": {"staged_batch": {"config": {
        "min_site_coverage": thresholds.min_site_coverage,
        "max_dropped_fraction": thresholds.max_dropped_fraction,
        "allow_new_alleles": allow_new_alleles}}}}


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    request_jobs=[append_batch, ingest_batch],
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "After a run that staged batch B, whose checks on staged_batch[B] all passed, and that "
        "did not append it (staged_batch materialized alone from the UI), requests append_batch "
        "for B. A refused batch is never appended: it stays refused at staged_batch. When an "
        "append found the store changed since B was checked and B no longer fitting it, B is "
        "checked again (ingest_batch)."
    ),
)
def append_sensor(context: dg.RunStatusSensorContext, staging: StagingResource,
                  store: VczStoreResource):
    run = context.dagster_run
    requests = [dg.RunRequest(job_name=append_batch.name, partition_key=batch,
                              run_key=f"append:{run.run_id}:{batch}")
                for batch in _unappended_batches(context.instance, run.run_id)]
    batch = run.tags.get("dagster/partition")
    if run.tags.get(MOVED_ON) and batch:
        requests.append(dg.RunRequest(job_name=ingest_batch.name, partition_key=batch,
                                      run_key=f"recheck:{run.run_id}",
                                      run_config=_recheck_config(staging, store, batch),
                                      tags={"vczstore/recheck_of": run.run_id}))
    return requests or dg.SkipReason(f"run {run.run_id[:8]} ({run.job_name}) left no checked "
                                     "batch to append and no batch to check again")


@dg.sensor(
    job=withdraw_samples,
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        f"Each new *{REQUEST_SUFFIX} in the withdrawals folder (one sample ID per line; write it "
        "elsewhere and move it in) becomes a partition of 'withdrawals' and one withdraw_samples run."
    ),
)
def withdrawal_sensor(
    context: dg.SensorEvaluationContext, withdrawals: WithdrawalsResource
) -> dg.SensorResult:
    seen = _seen(context.cursor)
    new, unsafe, named_after_sample = [], [], 0
    for entry in withdrawals.entries():
        name = entry["name"]
        if entry["type"] != "file" or not name.endswith(REQUEST_SUFFIX) or not entry["size"]:
            continue
        key = name.removesuffix(REQUEST_SUFFIX)
        if key in seen:
            continue
        reason = unsafe_key_reason(key)
        if reason:
            unsafe.append(f"{printable(name)} ({reason})")
        elif _names_a_listed_sample(key, withdrawals.read_bytes(name)):
            named_after_sample += 1  # the name itself must not be shown anywhere
        else:
            new.append(key)
    notes = []
    if unsafe:
        notes.append(f"Never processed, the file name is not a safe request id: {_listed(unsafe)}.")
    if named_after_sample:
        notes.append(
            f"{named_after_sample} request file(s) not processed: the file name contains a sample ID "
            "it lists, and a request's name is kept forever. Rename them (e.g. by date)."
        )
    return _result(context, partitions.withdrawals, new, seen, notes, "No new withdrawal request.")


def _names_a_listed_sample(key: str, request: bytes) -> bool:
    return any(s in key for s in parse_sample_list(request.decode("utf-8", errors="replace")))

