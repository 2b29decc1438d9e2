"""End to end: ``dg dev`` (as ``make dev`` starts it) on a free loopback port, its sensors, its
runs, its web UI in headless Chromium.

One ``dg dev`` serves every test of this module (it takes 20-80 s to come up).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from dagster import DagsterInstance

from vczstore_dagster import testdata
from vczstore_dagster.dev import dg_dev_command, prepare_dagster_home, sites_with_extra_alleles
from vczstore_dagster.store import open_store, schema, store_info
from vczstore_dagster_tests.defs.conftest import Project
from vczstore_dagster_tests.defs.test_definitions import ASSETS, CHECKS, JOBS, SCHEDULES, SENSORS
from vczstore_dagster_tests.defs.test_withdrawals import files_containing
from vczstore_dagster_tests.helpers import REPO_ROOT, free_port

READY_TIMEOUT = 300  # 20-80 s on a quiet machine; over 2 minutes seen with a load average of 8
RUN_TIMEOUT = 300
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
        return {**os.environ, **self.project.env(), "DAGSTER_HOME": str(self.home),
                "VIRTUAL_ENV": sys.prefix}

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
                dg_dev_command(str(self.port)),
                cwd=self.home, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_until_loaded()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # Ctrl-C, as an operator stops it: dagster dev shuts its daemon, webserver and code server
        # down (it sat out SIGTERM until the timeout).
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=15)
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
                            "{ runId jobName status startTime endTime tags { key value } } } } }")
        return data["runsOrError"]["results"]

    def wait_for_run(self, partition: str, job: str, status: str) -> dict:
        deadline = time.monotonic() + RUN_TIMEOUT
        while True:
            found = [r for r in self.runs() if r["jobName"] == job and r["status"] == status
                     and {"key": "dagster/partition", "value": partition} in r["tags"]]
            if found:
                return found[0]
            assert self.process.poll() is None, f"dagster dev exited:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"no {status} {job} run for {partition}: {self.runs()}"
            time.sleep(2)

    def step_times(self, run_id: str, step: str) -> dict:
        data = self.graphql(
            "query($id: ID!) { runOrError(runId: $id) { ... on Run { stepStats "
            "{ stepKey status startTime endTime } } } }", {"id": run_id})
        [stats] = [s for s in data["runOrError"]["stepStats"] if s["stepKey"] == step]
        return stats

    def launch(self, job: str, run_config: dict) -> str:
        data = self.graphql(
            "mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { "
            "__typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } "
            "... on RunConfigValidationInvalid { errors { message } } } }",
            {"params": {"selector": {"repositoryLocationName": "vczstore_dagster",
                                     "repositoryName": "__repository__", "jobName": job},
                        "runConfigData": run_config}})["launchRun"]
        assert data["__typename"] == "LaunchRunSuccess", data
        return data["run"]["runId"]

    def latest_metadata(self, asset: str, partition: str | None = None) -> dict:
        data = self.graphql(
            "query($path: [String!]!, $partitions: [String!]) { assetOrError(assetKey: "
            "{path: $path}) { ... on Asset { assetMaterializations(partitions: $partitions, "
            "limit: 1) { metadataEntries { label ... on IntMetadataEntry { intValue } "
            "... on TextMetadataEntry { text } ... on BoolMetadataEntry { boolValue } } } } } }",
            {"path": [asset], "partitions": [partition] if partition else None})
        [event] = data["assetOrError"]["assetMaterializations"]
        return {e["label"]: e.get("intValue", e.get("text", e.get("boolValue")))
                for e in event["metadataEntries"]}

    def partition_stats(self, asset: str) -> dict:
        data = self.graphql(
            "query($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) { ... on "
            "AssetNode { partitionStats { numMaterialized numFailed numMaterializing "
            "numPartitions } } } }", {"path": [asset]})
        return data["assetNodeOrError"]["partitionStats"]


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


def overlap(a: dict, b: dict) -> bool:
    return a["startTime"] < b["endTime"] and b["startTime"] < a["endTime"]


def test_ready_batch_in_the_inbox_reaches_the_store(dagster_dev, vcf_batch):
    """The first batch creates the store; two batches dropped together are then both converted
    and checked side by side (only the writing step holds the pool's slot) and appended one
    after the other; one run per batch, from the inbox sensor."""
    dagster_dev.project.drop_batch("e2e-batch", [vcf_batch("E2E-", 7)])
    event = dagster_dev.wait_for_materialization("vcz_store", "e2e-batch")
    together = ("e2e-other", "e2e-third")
    folders = [dagster_dev.project.drop_batch("e2e-other", [vcf_batch("E2F-", 5)], ready=False),
               dagster_dev.project.drop_batch("e2e-third", [vcf_batch("E2G-", 4)], ready=False)]
    for folder in folders:
        (folder / "_READY").touch()
    appends = {name: dagster_dev.wait_for_materialization("vcz_store", name) for name in together}
    writes = [dagster_dev.step_times(appends[name]["runId"], "vcz_store") for name in together]
    assert all(w["status"] == "SUCCESS" for w in writes), writes
    assert not overlap(*writes), writes
    runs = {r["runId"]: r for r in dagster_dev.runs()}
    for name in together:
        run = runs[appends[name]["runId"]]
        assert run["jobName"] == "ingest_batch" and run["status"] == "SUCCESS"
    # inbox_sensor requested the one run that staged, checked and appended the first batch.
    [run] = [r for r in runs.values() if {"key": "dagster/partition", "value": "e2e-batch"}
             in r["tags"]]
    assert run["runId"] == event["runId"] and run["jobName"] == "ingest_batch"
    assert {"key": "dagster/sensor_name", "value": "inbox_sensor"} in run["tags"]

    store = open_store(dagster_dev.project.store_url)
    ids = [str(s) for s in schema.strings(store.readonly_group()["sample_id"][...])]
    assert ids[:7] == [f"E2E-{i:05d}" for i in range(7)]
    assert sorted(ids[7:]) == [f"E2F-{i:05d}" for i in range(5)] + [f"E2G-{i:05d}" for i in range(4)]

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


def test_start_up_prints_no_warning(dagster_dev):
    """`make dev`'s command: neither "dagster dev is superseded by dg dev", nor dg's virtual
    environment mismatch, nor that the project's dagster.yaml "will not be used"."""
    start_up = dagster_dev.log.read_text(errors="replace").split("Launching Dagster services")[0]
    assert "Launching Dagster services" in dagster_dev.log.read_text(errors="replace")
    for warning in ("superseded", "does not match", "will not be used", "WARNING", "Warning"):
        assert warning not in start_up, start_up


@contextlib.contextmanager
def browser_page():
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield browser.new_page(viewport={"width": 1600, "height": 1000})
        finally:
            browser.close()


def show(page, url: str, *texts: str, screenshot: str | None = None) -> None:
    """Open ``url``, wait until each of ``texts`` is visible, and take a screenshot."""
    page.goto(url, wait_until="domcontentloaded")
    for text in texts:
        page.get_by_text(text, exact=True).first.wait_for(state="visible", timeout=60_000)
    page.wait_for_timeout(1000)  # let the layout settle for the picture
    if screenshot:
        page.screenshot(path=str(SCREENSHOTS / screenshot), full_page=True)
        assert (SCREENSHOTS / screenshot).stat().st_size > 10_000


def metadata_row(page, key: str) -> str:
    """The text of the metadata table row whose key is ``key`` (asset overview page)."""
    row = page.locator("tr", has=page.get_by_text(key, exact=True)).first
    row.wait_for(state="visible", timeout=60_000)
    return row.inner_text()


def test_refused_batch_store_summary_and_replaced_release_in_a_real_browser(dagster_dev,
                                                                            vcf_batch, tmp_path):
    """A good and a refused batch: the store is not shown failed, the refusal's reason is on the
    batch's check, the summary has the store's counts; after a withdrawal that redacts release
    ui-r, ui-r-r1 is there and ui-r is marked replaced."""
    project, url = dagster_dev.project, dagster_dev.url
    project.drop_batch("ui-good", [vcf_batch("UIG-", 9)])
    refused = testdata.write_vcf(tmp_path / "refused.vcf", testdata.sample_names("UIX-", 4),
                                 sites=sites_with_extra_alleles(num_variants=100))
    project.drop_batch("ui-refused", [refused])
    dagster_dev.wait_for_materialization("vcz_store", "ui-good")
    refused_run = dagster_dev.wait_for_run("ui-refused", "ingest_batch", "SUCCESS")
    assert {"key": "vczstore/refused", "value": "variants_match_store"} in refused_run["tags"]
    dagster_dev.launch("tag_release", {"ops": {"tag_store": {"config": {
        "name": "ui-r", "message": "Release for the UI test"}}}})
    dagster_dev.wait_for_materialization("store_release", "ui-r")

    stats = dagster_dev.partition_stats("vcz_store")
    assert stats["numFailed"] == 0 and stats["numPartitions"] - stats["numMaterialized"] >= 1
    info = store_info(open_store(project.store_url))
    with browser_page() as page:
        page.goto(f"{url}/asset-groups", wait_until="domcontentloaded")
        graph = page.locator("svg foreignObject")  # the graph's nodes, not the sidebar list
        for name in ("incoming_batch", "staged_batch", "vcz_store", "store_release",
                     "store_summary"):
            graph.get_by_text(name, exact=True).first.wait_for(state="visible", timeout=60_000)
        # The store's audit shows the store's state (the refused run audited main as it
        # stands), not a check that did not run: "1 / 1 Passed" on vcz_store's node.
        store_node = graph.filter(has=page.get_by_text("vcz_store", exact=True)).first
        store_node.get_by_text(re.compile(r"1\s*/\s*1\s*Passed")).first.wait_for(
            state="visible", timeout=60_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(SCREENSHOTS / "asset_graph.png"), full_page=True)

        show(page, f"{url}/assets/vcz_store?view=partitions", "Failed (0)", "ui-refused",
             screenshot="store_partitions_none_failed.png")
        show(page, f"{url}/assets/staged_batch?view=checks&checkDetail=variants_match_store",
             "variants_match_store", "ui-refused", screenshot="refused_batch_reason.png")
        reason = page.get_by_text("refused: retry with ingest_batch", exact=False).first
        reason.wait_for(state="visible", timeout=60_000)
        assert "batch ui-refused.vcz: 4 new ALT allele(s)" in reason.inner_text()
        assert "dismiss_batch" in reason.inner_text()
        assert "UIX-" not in page.content()

        show(page, f"{url}/assets/store_summary", "total_samples", screenshot="store_summary.png")
        for key, value in [("total_samples", info.num_samples),
                           ("active_samples", info.num_active_samples),
                           ("batches", len(info.batches)), ("releases_citable", 1)]:
            assert metadata_row(page, key).split()[-1] == str(value), metadata_row(page, key)

        # A withdrawal that hits the release: ui-r is redacted into ui-r-r1.
        project.request_withdrawal("ui-request", ["UIG-00002"])
        dagster_dev.wait_for_materialization("sample_withdrawals", "ui-request")
        replaced = dagster_dev.latest_metadata("store_release", "ui-r")
        assert (replaced["state"], replaced["replaced_by"], replaced["citable"]) == (
            "replaced", "ui-r-r1", False)
        assert dagster_dev.latest_metadata("store_release", "ui-r-r1")["replaces"] == "ui-r"
        show(page, f"{url}/assets/store_release?view=partitions&partition=ui-r",
             "ui-r-r1", "replaced", screenshot="release_replaced.png")
        show(page, f"{url}/assets/store_release?view=partitions&partition=ui-r-r1",
             "citable", "ui-r", screenshot="release_redacted_revision.png")
        assert page.get_by_text("Redacted revision of release", exact=False).first.is_visible()
        show(page, f"{url}/assets/store_summary", "releases_replaced",
             screenshot="store_summary_after_withdrawal.png")
        assert metadata_row(page, "releases_replaced").split()[-1] == "1"
        assert metadata_row(page, "active_samples").split()[-1] == str(info.num_active_samples - 1)
    assert files_containing(dagster_dev.home, ["UIG-00002", "UIX-0000"]) == []
