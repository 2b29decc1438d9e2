"""The one Definitions object of the project; ``workspace.yaml`` and ``dg`` (``[tool.dg]`` in
pyproject.toml) load it."""

from __future__ import annotations

import dagster as dg

from vczstore_dagster.defs.assets.batches import incoming_batch, staged_batch
from vczstore_dagster.defs.assets.releases import store_release, tag_release_job
from vczstore_dagster.defs.assets.store import vcz_store
from vczstore_dagster.defs.assets.summary import store_summary
from vczstore_dagster.defs.assets.withdrawals import sample_withdrawals
from vczstore_dagster.defs.checks import staged_batch_matches_store
from vczstore_dagster.defs.jobs import append_batch, ingest_batch, withdraw_samples
from vczstore_dagster.defs.remedies import (
    dismiss_batch,
    purge_store,
    recompress_store,
    widen_field,
)
from vczstore_dagster.defs.resources import resources_from_env
from vczstore_dagster.defs.schedules import release_schedule
from vczstore_dagster.defs.sensors import append_sensor, inbox_sensor, withdrawal_sensor


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    """The project's definitions; ``resources`` replaces the ones configured from the environment."""
    return dg.Definitions(
        assets=[incoming_batch, staged_batch, vcz_store, store_release, sample_withdrawals,
                store_summary],
        asset_checks=[staged_batch_matches_store],
        jobs=[ingest_batch, append_batch, withdraw_samples, tag_release_job, widen_field,
              purge_store, recompress_store, dismiss_batch],
        sensors=[inbox_sensor, append_sensor, withdrawal_sensor],
        schedules=[release_schedule],
        resources=resources if resources is not None else resources_from_env(),
        # Runs of other selections (a materialization from the UI) in one process too: a
        # subprocess per step costs 15-20 s on a small machine.
        executor=dg.in_process_executor,
    )


defs = build_definitions()
