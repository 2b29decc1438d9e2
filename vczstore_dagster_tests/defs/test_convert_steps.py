"""staged_batch's conversion as Dagster steps: by default one partition in the run's process; with
four partitions under the multiprocess executor every step in a process of its own, and the staged
batch the one a single process converts, byte for byte. Nothing Dagster keeps names a sample."""

from __future__ import annotations

import os
import pathlib
import re

import dagster as dg
import pytest

from vczstore_dagster import testdata
from vczstore_dagster.definitions import build_definitions
from vczstore_dagster.defs.executors import executor_from_env
from vczstore_dagster.defs.resources import resources_from_env
from vczstore_dagster.store import append_batch, convert_vcfs, init_store, open_store
from vczstore_dagster_tests.defs.conftest import ingest, materializations
from vczstore_dagster_tests.helpers import (
    assert_matches_bcftools,
    assert_same_vcz,
    bio2zarr_convert,
    tree_digest,
)

STAGES = ("stage_fetch", "plan_encoding", "stage_finish")


def _step_pids(result) -> dict[str, int]:
    return {e.step_key: e.pid for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START}


def _output_metadata(result, step_prefix: str) -> dict[str, dict]:
    return {e.step_key: {k: v.value for k, v in e.event_specific_data.metadata.items()}
            for e in result.all_events
            if e.event_type == dg.DagsterEventType.STEP_OUTPUT and e.step_key.startswith(step_prefix)}


def test_by_default_one_partition_in_the_run_process_and_no_sample_id_kept(project, vcf_batch):
    first, second = vcf_batch("Zx", 12), vcf_batch("Zy", 9)
    ids = testdata.sample_names("Zx", 12) + testdata.sample_names("Zy", 9)
    project.drop_batch("batch-a", [first])
    project.drop_batch("batch-b", [second])
    defs = project.definitions()
    with dg.instance_for_test() as instance:
        assert ingest(defs, instance, "batch-a").success
        result = ingest(defs, instance, "batch-b")
        assert result.success and result.appended
        kept = "\n".join(dg.serialize_value(entry) for run_id in result.run_ids
                          for entry in instance.all_logs(run_id))
        outputs = [path.read_bytes() for run_id in result.run_ids
                   for path in pathlib.Path(instance.storage_directory(), run_id).rglob("*")
                   if path.is_file()]
    pids = _step_pids(result)
    # one partition is converted in stage_fetch: no step fanned out for nothing
    assert {k for k in pids if k.startswith("staged_batch.")} == {f"staged_batch.{s}" for s in STAGES}
    assert set(pids.values()) == {os.getpid()}
    meta = materializations(result)["staged_batch"]
    # bio2zarr splits a VCF by contig at least (two here)
    assert (meta["partitions"], meta["explode_partitions"], meta["schema"]) == (1, 2, "the store's")
    assert meta["memory_per_partition_bytes"] > 0
    assert re.search(r"in 1 partition\(s\) needing about [\d.]+ KiB each", kept)
    assert all(i not in kept for i in ids), "a sample ID is in the run's event log"
    assert outputs and all(i.encode() not in out for out in outputs for i in ids)
    assert not project.staging.joinpath("batch-b").exists()  # no copy of the batch left behind
    assert_matches_bcftools(open_store(project.store_url), [first, second], cli=False)


def convert_job() -> dg.JobDefinition:
    """staged_batch alone (not its checks: fewer steps), every step in a process of its own (the
    project's ``multiprocess`` executor); the resources from the environment (the steps'
    processes build them again)."""
    job = dg.define_asset_job("convert_in_steps",
                              selection=dg.AssetSelection.assets("staged_batch").without_checks(),
                              executor_def=executor_from_env())
    defs = dg.Definitions.merge(build_definitions(resources_from_env()), dg.Definitions(jobs=[job]))
    return defs.resolve_job_def("convert_in_steps")


def test_four_partitions_each_a_process_give_the_single_process_batch(project, vcf_batch, tmp_path,
                                                                     monkeypatch):
    first, second = vcf_batch("A", 13), vcf_batch("B", 11)
    # a store whose chunks (20 variants × 8 samples) split the batch into 5 variant chunks and
    # lay it out with an offset of 5 samples
    init_store(project.store_url, batch_id="batch-a", from_vcz=str(bio2zarr_convert(
        [first], tmp_path / "first.vcz", samples_chunk_size=8, variants_chunk_size=20)))
    store = open_store(project.store_url)
    single = convert_vcfs([second], tmp_path / "single.vcz", like=store)
    project.drop_batch("batch-b", [second])
    for name, value in project.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("VCZSTORE_EXECUTOR", "multiprocess")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("batches", ["batch-b"])
        with dg.execute_job(dg.reconstructable(convert_job), instance,
                            run_config={"ops": {"staged_batch": {"config": {"partitions": 4}}}},
                            tags={"dagster/partition": "batch-b"}) as result:
            assert result.success, [e.message for e in result.all_events if e.is_failure]
            pids = _step_pids(result)
            partitions = {**_output_metadata(result, "staged_batch.explode_partition"),
                          **_output_metadata(result, "staged_batch.encode_partition")}
            meta = materializations(result)["staged_batch"]
    assert sorted(pids) == sorted([*(f"staged_batch.{s}" for s in STAGES),
                                   *(f"staged_batch.explode_partition[{j}]" for j in range(2)),
                                   *(f"staged_batch.encode_partition[{j}]" for j in range(4))])
    assert len(set(pids.values())) == len(pids) and os.getpid() not in pids.values()
    assert {key: m["pid"] for key, m in partitions.items()} == {
        key: pid for key, pid in pids.items() if "_partition[" in key}  # the work ran in the step
    assert (meta["partitions"], meta["explode_partitions"], meta["sample_offset"]) == (4, 2, 5)
    staged = project.staging / "batch-b" / "batch-b.vcz"
    assert_same_vcz(single.path, staged)
    assert tree_digest(staged) == tree_digest(single.path)
    append_batch(store, str(staged), batch_id="batch-b")
    assert_matches_bcftools(open_store(project.store_url), [first, second], cli=False)


def test_partitions_setting_from_the_environment(monkeypatch, tmp_path):
    assert resources_from_env(tmp_path)["staging"].convert_partitions == 1
    monkeypatch.setenv("VCZSTORE_CONVERT_PARTITIONS", "6")
    assert resources_from_env(tmp_path)["staging"].convert_partitions == 6
    for bad in ("0", "four"):
        monkeypatch.setenv("VCZSTORE_CONVERT_PARTITIONS", bad)
        with pytest.raises(ValueError, match="VCZSTORE_CONVERT_PARTITIONS"):
            resources_from_env(tmp_path)


@pytest.mark.parametrize("kind", ["k8s", "docker"])
def test_steps_elsewhere_pass_their_outputs_through_the_shared_volume(kind, monkeypatch, tmp_path):
    monkeypatch.setenv("VCZSTORE_EXECUTOR", kind)
    monkeypatch.setenv("VCZSTORE_SHARED_PATH", "/mnt/cohort")
    assert resources_from_env(tmp_path)["io_manager"].base_dir == "/mnt/cohort/dagster-outputs"
    monkeypatch.setenv("VCZSTORE_EXECUTOR", "multiprocess")  # one machine: the instance's storage
    assert "io_manager" not in resources_from_env(tmp_path)
