"""The three jobs the sensors and the schedule request.

They run in-process: a subprocess per step costs 15-20 s on a small machine and the steps of one
batch are sequential anyway. For a multiprocess or distributed executor, pass another
``executor_def`` here (e.g. ``dg.multiprocess_executor`` or ``dagster_k8s.k8s_job_executor``).
"""

from __future__ import annotations

import dagster as dg

ingest_batch = dg.define_asset_job(
    "ingest_batch",
    selection=dg.AssetSelection.assets("incoming_batch", "staged_batch", "vcz_store"),
    executor_def=dg.in_process_executor,
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
