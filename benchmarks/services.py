"""Servers the harness starts and stops itself: ``moto_server`` (S3) and ``dagster dev``.

Both listen on 127.0.0.1 on a free port, run in their own process group, and are stopped by that
group's id when the harness is done with them.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from benchmarks.measure import REPO

BIN = pathlib.Path(sys.executable).parent
S3_KEY = "bench"
S3_SECRET = "bench-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(process: subprocess.Popen | None, timeout: float = 60) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


class MotoServer:
    """An S3 endpoint in memory; one per measurement so that memory does not pile up."""

    def __init__(self, log: pathlib.Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process = None

    def __enter__(self) -> MotoServer:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=2):
                    break
            except urllib.error.HTTPError:
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start; see {self.log}") from None
                time.sleep(0.2)
        return self

    def __exit__(self, *exc) -> None:
        _stop(self.process)

    def options(self) -> dict:
        """Engine storage options (also what the workers turn into s3fs arguments)."""
        return {"endpoint_url": self.endpoint, "access_key_id": S3_KEY,
                "secret_access_key": S3_SECRET, "region": "us-east-1", "allow_http": True,
                "force_path_style": True}

    def create_bucket(self, name: str) -> None:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=S3_KEY,
                              aws_secret_access_key=S3_SECRET, region_name="us-east-1")
        client.create_bucket(Bucket=name)


class DagsterDev:
    """``dagster dev`` over a scratch project: its own DAGSTER_HOME, store, inbox and staging."""

    READY_TIMEOUT = 240

    def __init__(self, root: pathlib.Path):
        self.root = root
        self.home = root / "dagster_home"
        self.store = root / "store"
        self.inbox = root / "inbox"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "dagster_dev.log"
        self.process = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "DAGSTER_HOME": str(self.home), "VCZSTORE_URL": str(self.store),
                "VCZSTORE_INBOX": str(self.inbox), "VCZSTORE_STAGING": str(self.root / "staging"),
                "VCZSTORE_WITHDRAWALS": str(self.root / "withdrawals")}

    def dagster(self, *args: str) -> list[str]:
        return [str(BIN / "dagster"), *args]

    def __enter__(self) -> DagsterDev:
        from vczstore_dagster.dev import prepare_dagster_home

        for sub in ("inbox", "staging", "withdrawals"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        prepare_dagster_home(self.home)
        subprocess.run(self.dagster("instance", "concurrency", "set", "vcz_store", "1"),
                       env=self.env(), check=True, capture_output=True, timeout=120)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                self.dagster("dev", "-h", "127.0.0.1", "-p", str(self.port), "-w", "workspace.yaml"),
                cwd=REPO, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        try:
            self._wait_until_loaded()
        except BaseException:
            _stop(self.process)
            raise
        return self

    def __exit__(self, *exc) -> None:
        _stop(self.process)

    def log_tail(self, n: int = 15) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").strip().splitlines()[-n:])

    def graphql(self, query: str) -> dict:
        body = json.dumps({"query": query}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read()).get("data") or {}

    def _wait_until_loaded(self) -> None:
        deadline = time.monotonic() + self.READY_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"dagster dev exited:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=5):
                    pass
                entries = self.graphql(
                    "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
                )["workspaceOrError"]["locationEntries"]
                if any(e["loadStatus"] == "LOADED" for e in entries):
                    return
            except (urllib.error.URLError, ConnectionError, OSError, KeyError, TypeError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"dagster dev not ready in {self.READY_TIMEOUT} s:\n{self.log_tail()}")
            time.sleep(1)

    def runs(self) -> list[dict]:
        data = self.graphql("{ runsOrError(limit: 20) { ... on Runs { results "
                            "{ runId jobName status tags { key value } } } } }")
        return (data.get("runsOrError") or {}).get("results") or []

    def run_times(self, partition: str) -> dict[str, dict]:
        """Creation, start and end (epoch seconds) of the partition's latest run of each job."""
        query = ('{ runsOrError(limit: 10, filter: {tags: [{key: "dagster/partition", value: "%s"}]}) '
                 "{ ... on Runs { results { runId jobName status creationTime startTime endTime } } } }")
        try:
            results = (self.graphql(query % partition).get("runsOrError") or {}).get("results") or []
        except (urllib.error.URLError, OSError, ValueError):
            return {}
        latest: dict[str, dict] = {}
        for run in results:  # newest first
            latest.setdefault(run["jobName"], run)
        return latest

    def committed_batches(self) -> list[str]:
        from vczstore_dagster.store import StoreNotFoundError, open_store
        from vczstore_dagster.store.ledger import read_ledger

        try:  # not there yet, or created but its first commit not yet made
            return read_ledger(open_store(str(self.store)).readonly_group()).batch_ids()
        except StoreNotFoundError:
            return []

    def drop_batch(self, name: str, num_samples: int, seed: int) -> float:
        """Write a small VCF batch into the inbox, then ``_READY``; the time ``_READY`` appeared."""
        from vczstore_dagster import testdata

        folder = self.inbox / name
        samples = testdata.sample_names(f"{name}-", num_samples)
        testdata.write_vcf(folder / f"{name}.vcf", samples, num_variants=200, seed=seed)
        (folder / "_READY").touch()
        return time.time()

    def wait_committed(self, name: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while name not in self.committed_batches():
            if self.process.poll() is not None:
                raise RuntimeError(f"dagster dev exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                failed = [r["status"] for r in self.runs() if any(
                    t["value"] == name for t in r.get("tags") or [])]
                raise RuntimeError(f"batch {name} not committed in {timeout:.0f} s "
                                   f"(its runs: {failed or 'none'})")
            time.sleep(0.2)
        return time.time()


DASK_CLUSTER = """
import sys
from vczstore_dagster.store.cluster import start_local_cluster
cluster = start_local_cluster(n_workers=int(sys.argv[1]))
print(cluster.scheduler_address, flush=True)
sys.stdin.read()  # until the harness closes our stdin
cluster.close()
"""


class DaskCluster:
    """The engine's LocalCluster (``--dask-scheduler local``) in a child process, so that the
    harness stays small; its address is what the operations are given."""

    def __init__(self, n_workers: int = 2):
        self.n_workers = n_workers
        self.process = None
        self.address = ""

    def __enter__(self) -> DaskCluster:
        self.process = subprocess.Popen(
            [sys.executable, "-c", DASK_CLUSTER, str(self.n_workers)], cwd=REPO,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.address = self.process.stdout.readline().strip()
        if not self.address.startswith("tcp://"):
            _stop(self.process)
            raise RuntimeError("the Dask cluster did not start")
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                _stop(self.process)
