"""Every asset, check, sensor, schedule and job the design names (loading the code location through
``workspace.yaml`` is tested against a running ``dagster dev`` in test_dagster_dev.py)."""

from __future__ import annotations

import dagster as dg

ASSETS = {"incoming_batch", "staged_batch", "vcz_store", "store_release", "sample_withdrawals",
          "store_summary"}
CHECKS = {
    ("staged_batch", "batch_is_readable"),
    ("staged_batch", "variants_match_store"),
    ("staged_batch", "fields_match_store"),
    ("staged_batch", "samples_are_new"),
    ("vcz_store", "store_consistent"),
    ("store_release", "release_citable"),
}
SENSORS = {"inbox_sensor", "append_sensor", "withdrawal_sensor"}
SCHEDULES = {"release_schedule"}
JOBS = {"ingest_batch", "append_batch", "withdraw_samples", "tag_release", "widen_field",
        "purge_store", "recompress_store", "dismiss_batch"}
# The jobs made of ops that write the store: their op, in the pool.
STORE_WRITING_OPS = {"tag_release": "tag_store", "widen_field": "widen",
                     "purge_store": "purge_history", "recompress_store": "recompress"}
PARTITIONS = {"incoming_batch": "batches", "staged_batch": "batches", "vcz_store": "batches",
              "store_release": "releases", "sample_withdrawals": "withdrawals"}
STORE_WRITERS = {"vcz_store", "store_release", "sample_withdrawals"}


def test_every_named_definition_is_there(project):
    defs = project.definitions()
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == ASSETS
    assert {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys} == CHECKS
    assert {s.name for s in defs.sensors} == SENSORS
    assert {s.name for s in defs.schedules} == SCHEDULES
    for name in JOBS:
        defs.resolve_job_def(name)
    assert graph.get(dg.AssetKey("store_summary")).partitions_def is None
    for key in ASSETS:
        node = graph.get(dg.AssetKey(key))
        assert node.owners and node.tags, key
    for key, partitions in PARTITIONS.items():
        node = graph.get(dg.AssetKey(key))
        assert isinstance(node.partitions_def, dg.DynamicPartitionsDefinition)
        assert node.partitions_def.name == partitions


def test_checks_on_staged_batch_block_and_writers_share_one_pool(project):
    defs = project.definitions()
    graph = defs.resolve_asset_graph()
    for key in graph.asset_check_keys:
        spec = graph.get_check_spec(key)
        if key.asset_key == dg.AssetKey("staged_batch"):
            assert spec.blocking, key
    for name in STORE_WRITERS:
        assets_def = graph.get(dg.AssetKey(name)).assets_def
        assert assets_def.op.pool == "vcz_store", name
    for job, op in STORE_WRITING_OPS.items():
        assert defs.resolve_job_def(job).graph.node_named(op).definition.pool == "vcz_store", job
    # Conversions of different batches run side by side: in ingest_batch only the step that
    # writes takes a slot (the instance's pools are at op granularity, see test_dev.py).
    pools = {node.name: node.pool for node in defs.resolve_job_def("ingest_batch").graph.iterate_op_defs()}
    assert {name for name, pool in pools.items() if pool} == {"vcz_store"}, pools


def test_ingest_stages_checks_and_appends(project):
    """One run per batch; append_batch appends a batch staged alone."""
    defs = project.definitions()
    staged_checks = {"batch_is_readable", "variants_match_store", "fields_match_store",
                     "samples_are_new"}
    for name, assets, checks in [
        ("ingest_batch", {"incoming_batch", "staged_batch", "vcz_store"},
         staged_checks | {"store_consistent"}),
        ("append_batch", {"vcz_store"}, {"store_consistent"}),
    ]:
        job = defs.resolve_job_def(name)
        assert job.executor_def.name == "in_process"
        assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == assets
        assert {k.name for k in job.asset_layer.asset_graph.asset_check_keys} == checks
