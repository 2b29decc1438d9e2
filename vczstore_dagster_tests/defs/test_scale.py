"""Running at scale: the Dagster instance on a real PostgreSQL server (Debian's, started here on
127.0.0.1) runs the ingest job end to end with the store's chunk work on a real Dask cluster; the
dagster-k8s and dagster-docker executor configurations pass Dagster's config validation (no
Kubernetes or Docker runs here)."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest
import yaml

from vczstore_dagster.definitions import build_definitions
from vczstore_dagster.defs.resources import VczStoreResource, resources_from_env
from vczstore_dagster.store import open_store
from vczstore_dagster_tests.defs.conftest import ingest, materializations
from vczstore_dagster_tests.helpers import REPO_ROOT, assert_matches_bcftools
from vczstore_dagster_tests.postgres import start_postgres


@pytest.fixture(scope="module")
def postgres():
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


def test_postgres_variant_differs_from_dagster_yaml_only_in_storage():
    base = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    variant = yaml.safe_load((REPO_ROOT / "dagster.postgres.yaml").read_text())
    assert set(variant.pop("storage")) == {"postgres"}
    assert variant == base


def test_ingest_job_on_a_postgres_instance_with_a_dask_cluster(postgres, project, vcf_batch,
                                                               dask_cluster, tmp_path,
                                                               monkeypatch):
    from dagster_postgres import (
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "dagster.postgres.yaml", home / "dagster.yaml")
    for key, value in postgres.env().items():
        monkeypatch.setenv(key, value)
    first, second = vcf_batch("P", 12), vcf_batch("Q", 7)
    project.drop_batch("batch-a", [first])
    project.drop_batch("batch-b", [second])
    resources = project.resources()
    resources["store"] = VczStoreResource(url=project.store_url,
                                          dask_scheduler=dask_cluster.scheduler_address)
    defs = build_definitions(resources)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        created = ingest(defs, instance, "batch-a")
        appended = ingest(defs, instance, "batch-b")
        assert created.success and appended.success
        meta = materializations(appended)["vcz_store"]
        assert (meta["samples_before"], meta["samples_after"]) == (12, 19)
        assert meta["dask_tasks"] > 0 and meta["dask_workers_used"] >= 1
        assert materializations(created)["vcz_store"]["dask_tasks"] > 0
        run_ids = created.run_ids | appended.run_ids
        assert {r.run_id for r in instance.get_runs()} == run_ids
    # what Dagster recorded is in PostgreSQL itself
    conn = postgres.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT run_id, status FROM runs")
            assert dict(cursor.fetchall()) == {run_id: "SUCCESS" for run_id in run_ids}
            cursor.execute("SELECT count(*) FROM event_logs WHERE dagster_event_type = "
                           "'ASSET_MATERIALIZATION' AND asset_key LIKE '%vcz_store%'")
            assert cursor.fetchone()[0] == 2
    finally:
        conn.close()
    assert_matches_bcftools(open_store(project.store_url), [first, second])


def _ingest_job_with(executor_def):
    """The project's ``ingest_batch`` (same assets and checks) with another executor."""
    from vczstore_dagster.defs.jobs import ingest_batch

    job = dg.define_asset_job("ingest_batch_elsewhere", selection=ingest_batch.selection,
                              executor_def=executor_def)
    defs = dg.Definitions.merge(build_definitions(resources_from_env()), dg.Definitions(jobs=[job]))
    return defs.resolve_job_def("ingest_batch_elsewhere")


@pytest.mark.parametrize("kind", ["k8s", "docker"])
def test_cluster_executor_configuration_is_valid(kind, monkeypatch, tmp_path):
    from dagster_docker import docker_executor
    from dagster_k8s import k8s_job_executor

    from vczstore_dagster.defs.executors import docker_config, executor_from_env, k8s_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VCZSTORE_EXECUTOR", kind)
    monkeypatch.setenv("VCZSTORE_SHARED_PATH", "/mnt/cohort")
    monkeypatch.setenv("VCZSTORE_DOCKER_NETWORK", "vczstore")
    executor = executor_from_env()
    assert executor.name == {"k8s": "k8s_job_executor", "docker": "docker_executor"}[kind]
    resolved = dg.validate_run_config(_ingest_job_with(executor), {})
    config = resolved["execution"][executor.name]
    if kind == "k8s":
        assert config["volume_mounts"] == [{"name": "shared", "mountPath": "/mnt/cohort"}]
        assert config["env_secrets"] == ["vczstore"]
        raw, given = k8s_job_executor, k8s_config()
    else:
        assert config["network"] == "vczstore"
        assert "AWS_SECRET_ACCESS_KEY" in config["env_vars"]
        raw, given = docker_executor, docker_config()
    # the validation is real: the same configuration with one key misspelt is refused
    broken = raw.configured({**given, "max_concurent": 2}, name="broken")
    with pytest.raises(dg.DagsterInvalidConfigError, match="max_concurent"):
        dg.validate_run_config(_ingest_job_with(broken), {})


def test_dask_scheduler_setting_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VCZSTORE_DASK_SCHEDULER", "tcp://10.0.0.5:8786")
    assert resources_from_env(tmp_path)["store"].dask_scheduler == "tcp://10.0.0.5:8786"
    monkeypatch.delenv("VCZSTORE_DASK_SCHEDULER")
    assert resources_from_env(tmp_path)["store"].dask_scheduler is None
