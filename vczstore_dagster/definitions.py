"""The one Definitions object of the project; ``workspace.yaml`` loads it."""

from __future__ import annotations

import dagster as dg

from vczstore_dagster.defs.assets.batches import incoming_batch, staged_batch
from vczstore_dagster.defs.assets.releases import store_release
from vczstore_dagster.defs.assets.store import vcz_store
from vczstore_dagster.defs.assets.withdrawals import sample_withdrawals
from vczstore_dagster.defs.checks import staged_batch_matches_store
from vczstore_dagster.defs.jobs import ingest_batch, tag_release, withdraw_samples
from vczstore_dagster.defs.resources import resources_from_env
from vczstore_dagster.defs.schedules import release_schedule
from vczstore_dagster.defs.sensors import inbox_sensor, withdrawal_sensor


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    """The project's definitions; ``resources`` replaces the ones configured from the environment."""
    return dg.Definitions(
        assets=[incoming_batch, staged_batch, vcz_store, store_release, sample_withdrawals],
        asset_checks=[staged_batch_matches_store],
        jobs=[ingest_batch, withdraw_samples, tag_release],
        sensors=[inbox_sensor, withdrawal_sensor],
        schedules=[release_schedule],
        resources=resources if resources is not None else resources_from_env(),
    )


defs = build_definitions()
