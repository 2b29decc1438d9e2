"""Store writes on a Dask cluster (one real LocalCluster of 2 worker processes, ``dask_cluster``).

The cluster gives the same store as the local path (vcztools' view of main and of a redacted
release), on local Icechunk, Icechunk on S3 (moto) and plain Zarr 2 and 3; the chunk work ran in
the workers' processes (their PIDs, reported by the tasks); a worker SIGKILLed in the middle of a
task has its task rerun and the operation completes correctly; a coordinator SIGKILLed after the
workers wrote leaves main as it was, and purge collects the chunks the workers left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from vczstore_dagster_tests import helpers

NV = 100
SCHUNK = 8
VCHUNK = 40


def _worker_pids(cluster) -> set[int]:
    from distributed import Client

    with Client(cluster) as client:
        return set(client.run(os.getpid).values())


def _assert_ran_in_workers(work, cluster) -> None:
    assert work is not None, "nothing ran on the cluster"
    assert work.tasks > 0 and len(work.worker_pids) >= work.tasks
    assert os.getpid() not in work.worker_pids, "a task ran in the coordinator"
    assert set(work.worker_pids) <= _worker_pids(cluster), (work.worker_pids, "not the workers'")


def _records(store, at=None) -> list[str]:
    """vcztools' VCF of the store without the ## header (which names the reader, not the data)."""
    text = helpers.store_vcf_text(store, at=at)
    return [line for line in text.splitlines() if not line.startswith("##")]


def _options(moto):
    return moto.storage_options if moto is not None else None


@pytest.mark.parametrize("kind", helpers.STORE_KINDS)
def test_cluster_gives_the_local_store(kind, dask_cluster, vcf_batch, tmp_path, request,
                                       vcz_cache_dir):
    from vczstore_dagster.store import append_batch, init_store, open_store, tag_release
    from vczstore_dagster.store.purge import purge
    from vczstore_dagster.store.recompress import recompress_store
    from vczstore_dagster.store.remove import remove_samples
    from vczstore_dagster.store.widen import widen_field

    moto = request.getfixturevalue("moto_s3") if kind == "s3" else None
    icechunk = kind in ("icechunk", "s3")
    address = dask_cluster.scheduler_address
    first = vcf_batch("D", 10, num_variants=NV)
    later = vcf_batch("E", 13, num_variants=NV)
    vcz = helpers.cached_bio2zarr_convert([first], vcz_cache_dir, samples_chunk_size=SCHUNK,
                                          variants_chunk_size=VCHUNK,
                                          zarr_format=2 if kind == "zarr2" else 3)
    gone = [helpers.vcf_samples(first)[3], helpers.vcf_samples(later)[9]]
    stores = {}
    for how, scheduler in (("local", None), ("dask", address)):
        url = moto.new_url(how) if moto else str(tmp_path / how)
        # zstd:1 re-encodes the float field (GQ) block by block; the rest is copied
        created = init_store(url, from_vcz=str(vcz), storage_options=_options(moto),
                             backend="icechunk" if icechunk else "zarr",
                             zarr_format=2 if kind == "zarr2" else 3, float_compression="zstd:1",
                             dask_scheduler=scheduler)
        stores[how] = store = open_store(url, storage_options=_options(moto))
        if scheduler is None:
            assert created.cluster is None
            batch = tmp_path / "later.vcz"  # the two stores have the same layout: one batch
            helpers.convert_like(store, [later], batch)
        else:
            _assert_ran_in_workers(created.cluster, dask_cluster)
        if icechunk:
            tag_release(store, "r1")
        appended = append_batch(store, batch, batch_id="later", dask_scheduler=scheduler)
        assert appended.chunks_copied > 0 and appended.chunks_reencoded > 0  # unaligned append
        removed = remove_samples(store, gone, dask_scheduler=scheduler)
        if icechunk:
            widened = widen_field(store, "call_DP", "int16", dask_scheduler=scheduler)
            remove_samples(store, [helpers.vcf_samples(first)[0]])  # r1 holds it: redact r1
            purged = purge(store, dask_scheduler=scheduler)
            assert [r.replaced_by for r in purged.redacted] == ["r1-r1"]
        recompressed = recompress_store(store, dask_scheduler=scheduler)
        assert recompressed.columns and recompressed.columns_left == []
        if scheduler is not None:
            for result in (appended, removed, recompressed,
                           *((widened, purged) if icechunk else ())):
                _assert_ran_in_workers(result.cluster, dask_cluster)

    if icechunk:
        gone.append(helpers.vcf_samples(first)[0])
        assert _records(stores["dask"], at="r1-r1") == _records(stores["local"], at="r1-r1")
        helpers.assert_matches_bcftools(stores["dask"], [first], removed=[gone[0], gone[2]],
                                        at="r1-r1")
        assert str(stores["dask"].readonly_group()["call_DP"].dtype) == "int16"
    assert _records(stores["dask"]) == _records(stores["local"])
    helpers.assert_matches_bcftools(stores["dask"], [first, later], removed=gone,
                                    storage_options=_options(moto))


@pytest.mark.parametrize("kind", ["icechunk", "zarr3"])
def test_worker_killed_mid_task_is_rerun(kind, dask_cluster, make_store, vcf_batch, tmp_path,
                                         monkeypatch):
    from vczstore_dagster.store.remove import remove_samples

    first = vcf_batch("W", 20, num_variants=NV)
    store, _ = make_store(kind, [first], samples_chunk_size=SCHUNK, variants_chunk_size=VCHUNK)
    twin, _ = make_store(kind, [first], samples_chunk_size=SCHUNK, variants_chunk_size=VCHUNK)
    ids = helpers.vcf_samples(first)
    gone = [ids[2], ids[11]]
    remove_samples(twin, gone)
    marker = tmp_path / "paused"
    monkeypatch.setenv("VCZSTORE_TEST_PAUSE_AT", "task")  # read by this process, the coordinator
    monkeypatch.setenv("VCZSTORE_TEST_PAUSE_MARKER", str(marker))
    monkeypatch.setenv("VCZSTORE_TEST_PAUSE_SECONDS", "300")
    outcome: dict = {}

    def coordinate():
        try:
            outcome["result"] = remove_samples(store, gone,
                                               dask_scheduler=dask_cluster.scheduler_address)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=coordinate)
    thread.start()
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert thread.is_alive(), f"the operation ended before a task paused: {outcome}"
        assert time.monotonic() < deadline, "no task paused"
        time.sleep(0.05)
    pid = int(marker.read_text())
    assert pid in _worker_pids(dask_cluster) and pid != os.getpid()
    os.kill(pid, signal.SIGKILL)  # the task's worker dies after writing its first block
    thread.join(timeout=240)
    assert not thread.is_alive(), "the operation did not finish after the worker died"
    assert "error" not in outcome, f"the operation failed: {outcome.get('error')!r}"
    _assert_ran_in_workers(outcome["result"].cluster, dask_cluster)
    assert _records(store) == _records(twin)
    helpers.assert_matches_bcftools(store, [first], removed=gone, cli=False)


def test_coordinator_killed_leaves_main_and_purge_collects_orphans(dask_cluster, make_store,
                                                                   vcf_batch, tmp_path):
    from vczstore_dagster.store import open_store
    from vczstore_dagster.store.purge import purge
    from vczstore_dagster.store.remove import remove_samples

    first = vcf_batch("K", 20, num_variants=NV)
    store, url = make_store("icechunk", [first], samples_chunk_size=SCHUNK,
                            variants_chunk_size=VCHUNK)
    sample = helpers.vcf_samples(first)[5]
    snapshot = store.main_snapshot()
    keys_before = helpers.storage_keys(store)
    marker = tmp_path / "paused"
    env = dict(os.environ, VCZSTORE_TEST_PAUSE_AT="chunks", VCZSTORE_TEST_PAUSE_MARKER=str(marker),
               VCZSTORE_TEST_PAUSE_SECONDS="300")
    process = subprocess.Popen(
        [helpers.venv_tool("vczstore"), "remove", url, sample,
         "--dask-scheduler", dask_cluster.scheduler_address],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    with helpers.killing(process):
        helpers.wait_for_file(marker, process, timeout=120)  # the workers have written
        orphans = {k for k in helpers.storage_keys(store) - keys_before if k.startswith("chunks/")}
        assert orphans, "the workers wrote no chunk before the coordinator paused"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    fresh = open_store(url)
    assert fresh.main_snapshot() == snapshot
    helpers.assert_matches_bcftools(fresh, [first], cli=False)
    assert orphans <= helpers.storage_keys(fresh)
    time.sleep(2.5)  # the GC cutoff is a whole second before now: older orphans only
    purge(fresh)
    assert not orphans & helpers.storage_keys(fresh), "purge left the workers' orphan chunks"
    assert set(fresh.repo.list_branches()) == {"main"}
    remove_samples(fresh, [sample], dask_scheduler=dask_cluster.scheduler_address)
    helpers.assert_matches_bcftools(open_store(url), [first], removed=[sample], cli=False)


def test_unanswering_scheduler_fails_clearly_with_the_store_unchanged(make_store, vcf_batch):
    import dask

    from vczstore_dagster.store.errors import ClusterError
    from vczstore_dagster.store.remove import remove_samples

    first = vcf_batch("U", 10, num_variants=NV)
    store, _ = make_store("icechunk", [first], samples_chunk_size=SCHUNK)
    before = helpers.store_digest(store)
    address = f"tcp://127.0.0.1:{helpers.closed_port()}"
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        with pytest.raises(ClusterError, match=f"Dask scheduler {address} did not answer"):
            remove_samples(store, [helpers.vcf_samples(first)[0]], dask_scheduler=address)
    with pytest.raises(ClusterError, match="'no-port' is not a Dask scheduler address"):
        remove_samples(store, [helpers.vcf_samples(first)[0]], dask_scheduler="no-port")
    helpers.assert_unchanged(before, helpers.store_digest(store))


def test_cli_takes_the_scheduler_from_the_option_or_the_environment(dask_cluster, make_store,
                                                                    vcf_batch, tmp_path):
    from click.testing import CliRunner

    from vczstore_dagster.cli import cli

    for command in ("init", "append", "remove", "widen", "purge"):
        help_text = CliRunner().invoke(cli, [command, "--help"]).output
        assert "--dask-scheduler" in help_text, command
    first = vcf_batch("L", 10, num_variants=NV)
    later = vcf_batch("M", 6, num_variants=NV)
    store, url = make_store("zarr3", [first], samples_chunk_size=SCHUNK)
    batch = tmp_path / "later.vcz"
    helpers.convert_like(store, [later], batch)
    address = dask_cluster.scheduler_address
    runner = CliRunner()
    appended = runner.invoke(cli, ["--no-progress", "append", url, str(batch)],
                             env={"VCZSTORE_DASK_SCHEDULER": address})
    assert appended.exit_code == 0, appended.output
    assert f"worker(s) at {address}" in appended.output
    sample = helpers.vcf_samples(later)[1]
    removed = runner.invoke(cli, ["--no-progress", "remove", url, sample,
                                  "--dask-scheduler", address])
    assert removed.exit_code == 0, removed.output
    assert f"worker(s) at {address}" in removed.output
    helpers.assert_matches_bcftools(url, [first, later], removed=[sample], cli=False)
