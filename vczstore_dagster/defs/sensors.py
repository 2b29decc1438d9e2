"""Sensors: a ready batch in the inbox → ``ingest_batch``; a new request file → ``withdraw_samples``.

Each sensor keeps the names it has requested in its cursor, so each batch or request runs once;
the partition is added and the run requested in the same tick.
"""

import json

import dagster as dg

from vczstore_dagster.defs import partitions
from vczstore_dagster.defs.assets.withdrawals import REQUEST_SUFFIX
from vczstore_dagster.defs.inbox import READY_MARKER, batch_folders, describe_batch
from vczstore_dagster.defs.jobs import ingest_batch, withdraw_samples
from vczstore_dagster.defs.partitions import printable, unsafe_key_reason
from vczstore_dagster.defs.resources import InboxResource, WithdrawalsResource
from vczstore_dagster.store.remove import parse_sample_list

INTERVAL_SECONDS = 5  # the daemon evaluates sensors at most every 5 s anyway
SHOWN = 10


def _seen(cursor: str | None) -> set[str]:
    return set(json.loads(cursor)) if cursor else set()


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def _result(context, partitions_def, new: list[str], seen: set[str], notes: list[str], nothing: str,
            tags: dict[str, dict[str, str]] | None = None) -> dg.SensorResult:
    cursor = json.dumps(sorted(seen | set(new)))
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
        f"{READY_MARKER}. Each ready batch becomes a partition of 'batches' and one ingest_batch run."
    ),
)
def inbox_sensor(context: dg.SensorEvaluationContext, inbox: InboxResource) -> dg.SensorResult:
    seen = _seen(context.cursor)
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
    if unsafe:
        notes.append(f"Never ingested, the folder name is not a safe batch id: {_listed(unsafe)}.")
    if not_batches:
        notes.append(f"Ready but not a batch: {_listed(not_batches)}.")
    if waiting:
        notes.append(f"Waiting for {READY_MARKER}: {_listed(waiting)}.")
    return _result(context, partitions.batches, new, seen, notes, "No new ready batch in the inbox.", kinds)


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

