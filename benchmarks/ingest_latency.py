"""Ingest latency under ``make dev``'s setup, for one or more checkouts measured in turn.

For each round and checkout: start ``python -m vczstore_dagster.dev`` (what ``make dev`` runs:
example batches in a fresh inbox, a fresh instance, the sensors on) on a free port with its own
DAGSTER_HOME and data folders; measure

- ``examples``: the four example batches end to end, from the UI being loaded (the sensors start
  then) until the three good ones are committed and the refused one's run has ended;
- ``batch``: one more batch (20 samples × 200 variants, the examples' sites), from ``_READY`` to
  committed on main, twice.

Checkouts are measured interleaved (A, B, A, B...) so that a shared machine's load falls on both:

    python -m benchmarks.ingest_latency --checkout /tmp/before --checkout . --rounds 2

A checkout other than this one runs with its own folder first on PYTHONPATH (same .venv).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REPO = pathlib.Path(__file__).resolve().parent.parent
GOOD, REFUSED = ["batch-1", "batch-2", "batch-3"], "batch-4-extra-alleles"
TIMEOUT = 900


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dev:
    def __init__(self, checkout: pathlib.Path, root: pathlib.Path):
        self.checkout, self.root = checkout, root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = {k: root / k for k in ("store", "inbox", "staging", "withdrawals")}
        self.log = root / "dev.log"

    def __enter__(self) -> Dev:
        env = {**os.environ, "DAGSTER_HOME": str(self.root / "home"), "DAGSTER_PORT": str(self.port),
               **{f"VCZSTORE_{k.upper()}" if k != "store" else "VCZSTORE_URL": str(v)
                  for k, v in self.data.items()}}
        if self.checkout != REPO:
            env["PYTHONPATH"] = str(self.checkout)
        self.started = time.time()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "vczstore_dagster.dev"],
                                            cwd=self.checkout, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self.loaded = self._wait(self._is_loaded, "the code location to load")
        return self

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)

    def graphql(self, query: str) -> dict:
        request = urllib.request.Request(f"{self.url}/graphql", data=json.dumps(
            {"query": query}).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read()).get("data") or {}

    def _is_loaded(self) -> bool:
        try:
            entries = self.graphql("{ workspaceOrError { ... on Workspace { locationEntries "
                                   "{ loadStatus } } } }")["workspaceOrError"]["locationEntries"]
        except (urllib.error.URLError, OSError, KeyError, TypeError, ValueError):
            return False
        return any(e["loadStatus"] == "LOADED" for e in entries)

    def _wait(self, done, what: str) -> float:
        deadline = time.monotonic() + TIMEOUT
        while not done():
            if self.process.poll() is not None:
                raise RuntimeError(f"dev exited while waiting for {what}: {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}: {self.log}")
            time.sleep(0.5)
        return time.time()

    def committed(self) -> list[str]:
        from vczstore_dagster.store import StoreNotFoundError, open_store
        from vczstore_dagster.store.ledger import read_ledger

        try:
            return read_ledger(open_store(str(self.data["store"])).readonly_group()).batch_ids()
        except (StoreNotFoundError, FileNotFoundError, KeyError):
            return []

    def run_ended(self, partition: str) -> bool:
        """A run for ``partition`` ended (a refused batch's run fails in the two-run design and
        succeeds, appending nothing, in the one-run one)."""
        tag = json.dumps(partition)
        query = ('{ runsOrError(filter: {tags: [{key: "dagster/partition", value: ' + tag
                 + "}]}) { ... on Runs { results { status } } } }")
        try:
            runs = (self.graphql(query).get("runsOrError") or {}).get("results") or []
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return any(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs)

    def drop_batch(self, name: str, seed: int) -> float:
        from vczstore_dagster import testdata
        from vczstore_dagster.dev import NUM_VARIANTS, SITES_SEED

        folder = self.data["inbox"] / name
        testdata.write_vcf(folder / f"{name}.vcf", testdata.sample_names(f"{name}-", 20),
                           num_variants=NUM_VARIANTS, sites_seed=SITES_SEED, seed=seed)
        (folder / "_READY").touch()
        return time.time()


def measure(checkout: pathlib.Path, work: pathlib.Path, seed: int) -> dict:
    root = pathlib.Path(tempfile.mkdtemp(prefix="latency-", dir=work))
    try:
        with Dev(checkout, root) as dev:
            examples = dev._wait(lambda: set(GOOD) <= set(dev.committed())
                                 and dev.run_ended(REFUSED), "the example batches")
            singles = []
            for i in range(2):
                name = f"extra-{i + 1}"
                ready = dev.drop_batch(name, seed + i)
                singles.append(dev._wait(lambda n=name: n in dev.committed(), name) - ready)
            return {"checkout": str(checkout), "start_to_loaded": dev.loaded - dev.started,
                    "examples_from_loaded": examples - dev.loaded, "batch": singles,
                    "load": os.getloadavg()[0]}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", action="append", type=pathlib.Path,
                        help="a checkout to measure (repeatable; default: this one)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "benchmarks" / "out"
                        / "ingest_latency.json")
    args = parser.parse_args()
    checkouts = [c.resolve() for c in args.checkout or [REPO]]
    work = pathlib.Path(tempfile.mkdtemp(prefix="ingest-latency-"))
    results = []
    try:
        for round_ in range(args.rounds):
            for checkout in checkouts:
                print(f"round {round_ + 1}: {checkout} (load {os.getloadavg()[0]:.1f})", flush=True)
                result = measure(checkout, work, seed=500 + round_)
                print("  " + json.dumps(result), flush=True)
                results.append(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print("\n| checkout | start → UI loaded | 4 example batches (from loaded) | one batch _READY → "
          "committed | load average |\n|---|---:|---:|---:|---:|")
    for checkout in checkouts:
        mine = [r for r in results if r["checkout"] == str(checkout)]
        batch = [s for r in mine for s in r["batch"]]
        print(f"| {checkout.name} | {statistics.median(r['start_to_loaded'] for r in mine):.0f} s | "
              f"{statistics.median(r['examples_from_loaded'] for r in mine):.0f} s "
              f"({', '.join(f'{r['examples_from_loaded']:.0f}' for r in mine)}) | "
              f"{statistics.median(batch):.1f} s ({', '.join(f'{s:.1f}' for s in batch)}) | "
              f"{', '.join(f'{r['load']:.1f}' for r in mine)} |")


if __name__ == "__main__":
    main()
