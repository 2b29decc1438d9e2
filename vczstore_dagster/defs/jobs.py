"""The asset jobs the sensors request, and the launchpad runs with config.

- ``ingest_batch`` (partition B): take batch B from the inbox, stage it in the store's schema, run
  the blocking checks and append it, in one run. A refused batch is a failed check on
  ``staged_batch[B]`` and a successful run tagged ``vczstore/refused`` that appended nothing, not a
  failed store. Retry a refused batch by running it again with ``staged_batch``'s config
  (``allow_new_alleles``, ``min_site_coverage``, ``max_dropped_fraction``).
- ``append_batch`` (partition B): append staged batch B to the store; ``append_sensor`` requests
  it after a run that staged B and passed its checks without appending it (``staged_batch``
  materialized alone from the UI).
- ``withdraw_samples`` (partition W): carry out withdrawal request W.

They run in-process by default: a subprocess per step costs 15-20 s on a small machine. The store
writers' steps are in the pool ``vcz_store`` (limit 1, op granularity): batches convert side by
side, and each run's append waits for the slot.
``ingest_batch`` takes the executor ``VCZSTORE_EXECUTOR`` names (multiprocess, k8s, docker: see
:mod:`vczstore_dagster.defs.executors` and docs/scale.md). The jobs made of ops (``tag_release``,
``widen_field``, ``purge_store``, ``dismiss_batch``) are in :mod:`~vczstore_dagster.defs.remedies`
and :mod:`~vczstore_dagster.defs.assets.releases`.
"""

from __future__ import annotations

import dagster as dg

from vczstore_dagster.defs.executors import executor_from_env

ingest_batch = dg.define_asset_job(
    "ingest_batch",
    selection=dg.AssetSelection.assets("incoming_batch", "staged_batch", "vcz_store"),
    executor_def=executor_from_env(),
    description=(
        "Take batch B from the inbox, convert it in the store's schema, check it and append it "
        "(one commit). A refused batch appends nothing (the run is tagged vczstore/refused, the "
        "failed check on staged_batch says why): fix it and run this again with staged_batch's "
        "config (allow_new_alleles, min_site_coverage, max_dropped_fraction), or give up on it "
        "with dismiss_batch."
    ),
)

append_batch = dg.define_asset_job(
    "append_batch",
    selection=dg.AssetSelection.assets("vcz_store"),
    executor_def=dg.in_process_executor,
    description="Append staged batch B to the store (requested after B was staged and passed its "
                "checks in a run that did not append it).",
)

withdraw_samples = dg.define_asset_job(
    "withdraw_samples",
    selection=dg.AssetSelection.assets("sample_withdrawals"),
    executor_def=dg.in_process_executor,
    description="Carry out withdrawal request W: remove its samples, redact releases, purge history.",
)
