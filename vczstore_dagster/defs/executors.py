"""Where the steps of ``ingest_batch`` run, chosen by ``VCZSTORE_EXECUTOR`` when the code location
loads (see docs/scale.md):

- ``in_process`` (default): every step in the run's process; fastest for small batches.
- ``multiprocess``: every step in its own process on the run's machine, forked from a server that
  has imported the project (``VCZSTORE_MAX_CONCURRENT_STEPS`` at a time; Dagster's default: one per core).
- ``k8s``: dagster-k8s' ``k8s_job_executor``, every step a Kubernetes Job in
  ``VCZSTORE_K8S_NAMESPACE``, with the shared volume (a PersistentVolumeClaim,
  ``VCZSTORE_K8S_SHARED_CLAIM``) at ``VCZSTORE_SHARED_PATH`` and the Secret ``VCZSTORE_K8S_SECRET``
  (S3 keys, the PostgreSQL password) as environment variables.
- ``docker``: dagster-docker's ``docker_executor``, every step a container of the run's image on
  ``VCZSTORE_DOCKER_NETWORK``, with the Docker volume ``VCZSTORE_DOCKER_SHARED_VOLUME`` at
  ``VCZSTORE_SHARED_PATH``.

Steps on other machines must see the same staging area (bio2zarr writes only local directories):
put ``VCZSTORE_STAGING`` (and a local store or inbox, if not on S3) under the shared path. Their
outputs (the conversion's steps pass a path and partition numbers) go there too
(``dagster-outputs``). dagster-dask's executor is not offered: it has no dynamic outputs.
"""

from __future__ import annotations

import os

import dagster as dg

EXECUTORS = ("in_process", "multiprocess", "k8s", "docker")
# Passed on from the process that launches the step (names only: the values stay out of the config).
FORWARDED_ENV = [
    "VCZSTORE_URL", "VCZSTORE_INBOX", "VCZSTORE_STAGING", "VCZSTORE_WITHDRAWALS",
    "VCZSTORE_BACKEND", "VCZSTORE_FLOAT_COMPRESSION", "VCZSTORE_DASK_SCHEDULER",
    "VCZSTORE_S3_ENDPOINT", "VCZSTORE_WORKERS", "VCZSTORE_CONVERT_PARTITIONS", "AWS_REGION",
    "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_DB",
]
SECRET_ENV = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "DAGSTER_PG_PASSWORD"]


def _setting(name: str, default: str) -> str:
    return os.environ.get(name) or default


def k8s_config() -> dict:
    shared = _setting("VCZSTORE_SHARED_PATH", "/shared")
    return {
        "job_namespace": _setting("VCZSTORE_K8S_NAMESPACE", "default"),
        "env_vars": FORWARDED_ENV,
        "env_secrets": [_setting("VCZSTORE_K8S_SECRET", "vczstore")],
        "volumes": [{"name": "shared", "persistentVolumeClaim": {
            "claimName": _setting("VCZSTORE_K8S_SHARED_CLAIM", "vczstore-shared")}}],
        "volume_mounts": [{"name": "shared", "mountPath": shared}],
        "step_k8s_config": {"container_config": {"resources": {"requests": {
            "memory": _setting("VCZSTORE_K8S_STEP_MEMORY", "4Gi")}}}},
        "max_concurrent": int(_setting("VCZSTORE_MAX_CONCURRENT_STEPS", "8")),
    }


def docker_config() -> dict:
    config: dict = {
        "env_vars": FORWARDED_ENV + SECRET_ENV,
        "container_kwargs": {"volumes": {
            _setting("VCZSTORE_DOCKER_SHARED_VOLUME", "vczstore-shared"): {
                "bind": _setting("VCZSTORE_SHARED_PATH", "/shared"), "mode": "rw"}}},
        "max_concurrent": int(_setting("VCZSTORE_MAX_CONCURRENT_STEPS", "8")),
    }
    if os.environ.get("VCZSTORE_DOCKER_NETWORK"):
        config["network"] = os.environ["VCZSTORE_DOCKER_NETWORK"]
    return config  # the image: the run's own (DAGSTER_CURRENT_IMAGE)


def multiprocess_config() -> dict:
    """Each step in a process forked from a server that has imported Dagster and the project once
    (Dagster's default, ``spawn``, imports both again in every step: seconds each)."""
    config: dict = {"start_method": {"forkserver": {}}}
    if os.environ.get("VCZSTORE_MAX_CONCURRENT_STEPS"):  # else Dagster's default: one per core
        config["max_concurrent"] = int(os.environ["VCZSTORE_MAX_CONCURRENT_STEPS"])
    return config


def step_io_manager() -> dict:
    """Steps in other pods or containers pass their outputs (the conversion's work directory and
    partition numbers) through the shared volume; on one machine, the instance's storage does."""
    if _setting("VCZSTORE_EXECUTOR", "in_process") not in ("k8s", "docker"):
        return {}
    shared = _setting("VCZSTORE_SHARED_PATH", "/shared")
    return {"io_manager": dg.FilesystemIOManager(base_dir=f"{shared.rstrip('/')}/dagster-outputs")}


def executor_from_env() -> dg.ExecutorDefinition:
    kind = _setting("VCZSTORE_EXECUTOR", "in_process")
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "multiprocess":
        return dg.multiprocess_executor.configured(multiprocess_config(), name="multiprocess_executor")
    if kind == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured(k8s_config(), name="k8s_job_executor")
    if kind == "docker":
        from dagster_docker import docker_executor

        return docker_executor.configured(docker_config(), name="docker_executor")
    raise dg.DagsterInvariantViolationError(
        f"VCZSTORE_EXECUTOR={kind!r}: expected one of {', '.join(EXECUTORS)}")
