"""End to end: ``dagster dev`` on a free loopback port, its sensors, its runs, its web UI.

One ``dagster dev`` serves every test of this module (it takes 20-80 s to come up).
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from dagster import DagsterInstance

from vczstore_dagster.dev import prepare_dagster_home
from vczstore_dagster.store import open_store, schema
from vczstore_dagster_tests.defs.conftest import Project
from vczstore_dagster_tests.defs.test_definitions import ASSETS, CHECKS, JOBS, SCHEDULES, SENSORS
from vczstore_dagster_tests.defs.test_withdrawals import files_containing
from vczstore_dagster_tests.helpers import REPO_ROOT, free_port

READY_TIMEOUT = 120
RUN_TIMEOUT = 180
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO_ROOT / "test-output" / "defs"


class DagsterDev:
    def __init__(self, root: pathlib.Path):
        self.root = root
        self.home = root / "dagster_home"
        self.project = Project(root / "project")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "dagster_dev.log"
        self.process: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.project.env(), "DAGSTER_HOME": str(self.home)}

    def dagster(self, *args: str) -> list[str]:
        return [os.path.join(os.path.dirname(sys.executable), "dagster"), *args]

    def start(self) -> None:
        for sub in ("inbox", "staging", "withdrawals"):
            (self.project.root / sub).mkdir(parents=True)
        prepare_dagster_home(self.home)
        # What `dagster instance concurrency set vcz_store 1` does, without another process.
        with DagsterInstance.from_config(str(self.home)) as instance:
            instance.event_log_storage.set_concurrency_slots("vcz_store", 1)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                self.dagster("dev", "-h", "127.0.0.1", "-p", str(self.port), "-w", "workspace.yaml"),
                cwd=REPO_ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_until_loaded()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # dagster dev, its daemon, webserver, code server
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def wait_until_loaded(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            assert self.process.poll() is None, f"dagster dev exited:\n{self.log_tail()}"
            status = None
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=5):
                    pass
                entries = self.graphql(
                    "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                    "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
                )["workspaceOrError"]["locationEntries"]
                status = {e["name"]: e for e in entries}.get("vczstore_dagster")
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if status and status["loadStatus"] == "LOADED":
                error = status["locationOrLoadError"]
                assert error["__typename"] == "RepositoryLocation", error
                return
            assert time.monotonic() < deadline, f"not ready in {READY_TIMEOUT}s:\n{self.log_tail()}"
            time.sleep(1)

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            reply = json.loads(response.read())
        assert "errors" not in reply, reply["errors"]
        return reply["data"]

    def materialization(self, asset: str, partition: str) -> dict | None:
        data = self.graphql(
            "query($path: [String!]!, $partition: String!) { assetOrError(assetKey: {path: $path}) "
            "{ ... on Asset { assetMaterializations(partitions: [$partition], limit: 1) "
            "{ partition runId } } } }",
            {"path": [asset], "partition": partition},
        )
        events = (data["assetOrError"] or {}).get("assetMaterializations") or []
        return events[0] if events else None

    def wait_for_materialization(self, asset: str, partition: str) -> dict:
        deadline = time.monotonic() + RUN_TIMEOUT
        while (event := self.materialization(asset, partition)) is None:
            assert self.process.poll() is None, f"dagster dev exited:\n{self.log_tail()}"
            assert time.monotonic() < deadline, (
                f"{asset}[{partition}] not materialized in {RUN_TIMEOUT}s; runs: {self.runs()}"
            )
            time.sleep(2)
        return event

    def runs(self) -> list[dict]:
        data = self.graphql("{ runsOrError(limit: 20) { ... on Runs { results "
                            "{ runId jobName status tags { key value } } } } }")
        return data["runsOrError"]["results"]


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory):
    server = DagsterDev(tmp_path_factory.mktemp("dagster_dev"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_code_location_serves_every_named_definition(dagster_dev):
    data = dagster_dev.graphql(
        "{ repositoriesOrError { ... on RepositoryConnection { nodes { name "
        "location { name } jobs { name } schedules { name scheduleState { status } } "
        "sensors { name sensorState { status } } "
        "assetNodes { assetKey { path } assetChecksOrError { ... on AssetChecks "
        "{ checks { name } } } } } } } }"
    )
    [repo] = [r for r in data["repositoriesOrError"]["nodes"]
              if r["location"]["name"] == "vczstore_dagster"]
    assert {node["assetKey"]["path"][-1] for node in repo["assetNodes"]} == ASSETS
    checks = {(node["assetKey"]["path"][-1], check["name"])
              for node in repo["assetNodes"]
              for check in node["assetChecksOrError"].get("checks", [])}
    assert checks == CHECKS
    assert JOBS <= {job["name"] for job in repo["jobs"]}
    assert {s["name"]: s["sensorState"]["status"] for s in repo["sensors"]} == {
        name: "RUNNING" for name in SENSORS}
    assert {s["name"] for s in repo["schedules"]} == SCHEDULES


def test_ready_batch_in_the_inbox_reaches_the_store(dagster_dev, vcf_batch):
    vcf = vcf_batch("E2E-", 7)
    dagster_dev.project.drop_batch("e2e-batch", [vcf])
    event = dagster_dev.wait_for_materialization("vcz_store", "e2e-batch")
    [run] = [r for r in dagster_dev.runs() if r["runId"] == event["runId"]]
    assert run["jobName"] == "ingest_batch"
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["dagster/partition"] == "e2e-batch"
    assert tags["dagster/sensor_name"] == "inbox_sensor"

    store = open_store(dagster_dev.project.store_url)
    ids = [str(s) for s in schema.strings(store.readonly_group()["sample_id"][...])]
    assert ids == [f"E2E-{i:05d}" for i in range(7)]

    # A withdrawal dropped as a file: removed by the sensor's run, and the ID is then in no file
    # of the instance (SQLite run and event storage, compute logs) nor in dagster dev's own log.
    dagster_dev.project.request_withdrawal("e2e-request", ["E2E-00003"])
    dagster_dev.wait_for_materialization("sample_withdrawals", "e2e-request")
    ids = [str(s) for s in schema.strings(open_store(dagster_dev.project.store_url)
                                          .readonly_group()["sample_id"][...])]
    assert "E2E-00003" not in ids and "E2E-00004" in ids
    assert files_containing(dagster_dev.home, ["e2e-request"])  # the instance did record the run
    assert files_containing(dagster_dev.home, ["E2E-0000"]) == []
    assert "E2E-0000" not in dagster_dev.log.read_text(errors="replace")


def test_asset_graph_in_a_real_browser(dagster_dev):
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    screenshot = SCREENSHOTS / "asset_graph.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{dagster_dev.url}/asset-groups", wait_until="domcontentloaded")
            graph = page.locator("svg foreignObject")  # the graph's nodes, not the sidebar list
            for name in ("incoming_batch", "staged_batch", "vcz_store", "store_release"):
                graph.get_by_text(name, exact=True).first.wait_for(state="visible", timeout=60_000)
            page.wait_for_timeout(1000)  # let the layout settle for the picture
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
