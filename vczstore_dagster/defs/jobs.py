"""The three jobs the sensors and the schedule request.

They run in-process by default: a subprocess per step costs 15-20 s on a small machine.
``ingest_batch`` takes the executor ``VCZSTORE_EXECUTOR`` names (multiprocess, k8s, docker: see
:mod:`vczstore_dagster.defs.executors` and docs/scale.md).
"""

from __future__ import annotations

import dagster as dg

from vczstore_dagster.defs.executors import executor_from_env

ingest_batch = dg.define_asset_job(
    "ingest_batch",
    selection=dg.AssetSelection.assets("incoming_batch", "staged_batch", "vcz_store"),
    executor_def=executor_from_env(),
    description="Take batch B from the inbox, convert and check it, and append it to the store.",
)

withdraw_samples = dg.define_asset_job(
    "withdraw_samples",
    selection=dg.AssetSelection.assets("sample_withdrawals"),
    executor_def=dg.in_process_executor,
    description="Carry out withdrawal request W: remove its samples, redact releases, purge history.",
)

tag_release = dg.define_asset_job(
    "tag_release",
    selection=dg.AssetSelection.assets("store_release"),
    executor_def=dg.in_process_executor,
    description="Tag the store's main as release R.",
)
