"""Chunk work on a Dask cluster (``distributed``), or on this machine's cores without one.

An operation's chunk work is a list of :class:`~vczstore_dagster.store.blocks.Block` s (re-encodes)
and :class:`~vczstore_dagster.store.chunkcopy.ChunkCopy` s (encoded copies), each writing whole
chunks that no other item touches. :func:`run_work` runs them here, as before, unless the operation
was given a :class:`Cluster`. Then the coordinator (the process that keeps the commit) writes the
blocks of 1-d arrays (``sample_id``) itself and sends the rest to the cluster as tasks:

- Icechunk: it forks its session once, after its own resizes and array changes, sends that one
  fork to every task, and merges the forks the tasks return into the session that forked (merged
  into another session, the coordinator's uncommitted resize was lost). Commit, audit and
  compare-and-swap stay with the coordinator (:mod:`~vczstore_dagster.store.transaction`).
- Plain Zarr: tasks write chunks into the store itself; the coordinator writes the arrays' metadata
  and the consolidated metadata afterwards, as it does without a cluster.

A worker rebinds each item to its own store by array path and metadata (the metadata carries the
coordinator's view of an array: a grown shape, a level-1 codec). When a worker dies, Dask reruns
its tasks elsewhere from the same fork (whole chunks: the rerun writes the same bytes); any other
failure fails the operation and main does not move. A fork carries the storage credentials: it
travels only inside task arguments and results, is never scattered or saved, each result is
released as soon as it arrives, and a cluster started here (``local``) never spills worker data
to disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from vczstore_dagster.store.blocks import (
    Block,
    default_workers,
    limit_retained_memory,
    release_freed_memory,
    run_blocks,
)
from vczstore_dagster.store.chunkcopy import ChunkCopy, copy_chunks
from vczstore_dagster.store.errors import ClusterError
from vczstore_dagster.store.transaction import pause_for_tests

log = logging.getLogger(__name__)
LOCAL = "local"  # start a LocalCluster on this machine
ENV_VAR = "VCZSTORE_DASK_SCHEDULER"
TASKS_PER_THREAD = 4  # small enough tasks to balance the workers and to rerun cheaply


@dataclasses.dataclass
class ClusterWork:
    """What an operation ran on a Dask cluster."""

    scheduler: str
    workers: int  # in the cluster when the work was sent
    tasks: int
    worker_pids: list[int]  # the process that ran each task, in the order they finished

    @property
    def workers_used(self) -> int:
        return len(set(self.worker_pids))


class Cluster:
    """A Dask scheduler (an address, or ``local``), connected when there is work for it."""

    def __init__(self, address: str):
        self.address = address
        self.work: ClusterWork | None = None
        self._client = None
        self._local = None

    def client(self):
        if self._client is None:
            from distributed import Client

            try:
                if self.address == LOCAL:
                    self._local = start_local_cluster()
                    self._client = Client(self._local, set_as_default=False)
                else:
                    # timeout: Dask's distributed.comm.timeouts.connect (30 s by default)
                    self._client = Client(self.address, set_as_default=False)
            except ValueError as exc:
                raise ClusterError(f"--dask-scheduler {self.address!r} is not a Dask scheduler "
                                   f"address (tcp://HOST:PORT) nor {LOCAL!r}: {exc}") from exc
            except (OSError, TimeoutError) as exc:
                raise ClusterError(f"Dask scheduler {self.address} did not answer: {exc}") from exc
        return self._client

    def close(self) -> None:
        for part in (self._client, self._local):
            if part is not None:
                part.close()
        self._client = self._local = None

    def take_work(self) -> ClusterWork | None:
        """What ran on the cluster since the last call (an operation's share of a shared cluster)."""
        work, self.work = self.work, None
        return work

    def run(self, blocks: list[Block], copies: list[ChunkCopy], *, progress: str | None = None,
            on_done: Callable[[int], None] | None = None) -> tuple[int, int]:
        """Run the items as tasks; returns (chunks re-encoded, bytes copied)."""
        from distributed import as_completed

        client = self.client()
        session, base = _writers(blocks[0].target.store if blocks else copies[0].dst.store)
        fork = pickle.dumps(session.fork()) if session is not None else None
        threads = client.nthreads()
        tasks = _tasks(blocks, copies, TASKS_PER_THREAD * max(1, sum(threads.values())))
        log.info("sending %d task(s) (%d blocks, %d chunk copies) to %d Dask worker(s) at %s",
                 len(tasks), len(blocks), len(copies), len(threads), self.address)
        bar = _bar(len(blocks) + len(copies), progress)
        futures = client.map(_run_task, tasks, fork=fork, base=base, pure=False)
        forks, pids, written, copied = [], [], 0, 0
        try:
            for future in as_completed(futures, loop=client.loop):
                done = future.result()
                future.release()  # the worker drops its copy of the fork now
                forks.append(done.fork)
                pids.append(done.pid)
                written += done.chunks
                copied += done.bytes_copied
                if bar is not None:
                    bar.update(done.items)
                if on_done is not None:
                    on_done(done.chunks + done.copies)
        except BaseException as exc:
            client.cancel(futures)
            if _lost(exc):
                raise ClusterError(f"the Dask cluster at {self.address} lost the chunk work "
                                   f"({type(exc).__name__}: {exc}); nothing was published") from exc
            raise
        finally:
            del futures
            if bar is not None:
                bar.close()
        pause_for_tests("chunks")
        if session is not None:
            session.merge(*(f for f in forks if f is not None))
        previous = self.work
        self.work = ClusterWork(self.address, len(threads),
                                len(tasks) + (previous.tasks if previous else 0),
                                (previous.worker_pids if previous else []) + pids)
        return written, copied


@contextlib.contextmanager
def connect(scheduler: str | Cluster | None, *, lazy: bool = False) -> Iterator[Cluster | None]:
    """A :class:`Cluster` for ``scheduler`` (an address, or ``local``), connected now (a scheduler
    that does not answer fails the operation before anything is written) or, when ``lazy``, once
    there is work for it; closed at the end. A Cluster given is passed through (and left open);
    None or "" gives None: the work stays here."""
    if isinstance(scheduler, Cluster):
        yield scheduler
        return
    address = (scheduler or "").strip()
    if not address:
        yield None
        return
    cluster = Cluster(address)
    try:
        if not lazy:
            cluster.client()
        yield cluster
    finally:
        cluster.close()


def start_local_cluster(n_workers: int | None = None, threads_per_worker: int = 1):
    """A LocalCluster of worker processes on 127.0.0.1 (one per core, or ``VCZSTORE_WORKERS``),
    no dashboard, and worker data held in memory only: task results are forks, which carry the
    storage credentials, and must not be spilled to disk."""
    import dask
    from distributed import LocalCluster

    no_spill = {"distributed.worker.memory.target": False, "distributed.worker.memory.spill": False}
    with dask.config.set(no_spill):  # the nannies pass this configuration to their workers
        return LocalCluster(n_workers=n_workers or default_workers(),
                            threads_per_worker=threads_per_worker, processes=True,
                            host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR)


def run_work(blocks: Sequence[Block], copies: Sequence[ChunkCopy] = (), *,
             cluster: Cluster | None = None, progress: str | None = None,
             on_done: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Run every block and chunk copy, on ``cluster`` or here; returns (chunks re-encoded, bytes
    copied). ``progress``: a tqdm bar with that label; ``on_done(n)``: n more chunks written."""
    blocks, copies = list(blocks), list(copies)
    if cluster is None:
        written = run_blocks(blocks, on_block=on_done, progress=progress if blocks else None)
        copied = 0
        if copies:
            pause_for_tests("chunks")
            copied = copy_chunks(copies, (lambda: on_done(1)) if on_done is not None else None)
        return written, copied
    here = [b for b in blocks if b.variants is None]
    there = [b for b in blocks if b.variants is not None]
    written = run_blocks(here, on_block=on_done) if here else 0
    copied = 0
    if there or copies:
        more, copied = cluster.run(there, copies, progress=progress, on_done=on_done)
        written += more
    return written, copied


# ------------------------------------------------------------------------------------------------
# The tasks, as the workers run them
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Task:
    blocks: list  # (array path, metadata, array config, samples, variants, rewrite)
    copies: list  # (source StorePath, source key, destination array path, destination key)
    pause: tuple[str, float] | None = None  # crash tests: VCZSTORE_TEST_PAUSE_AT=task


@dataclasses.dataclass
class _Done:
    fork: Any  # the ForkSession written to (Icechunk), else None
    chunks: int
    copies: int
    bytes_copied: int
    items: int
    pid: int


def _run_task(task: _Task, *, fork: bytes | None, base) -> _Done:
    from zarr.storage import StorePath

    from vczstore_dagster.store.location import quiet_icechunk

    quiet_icechunk()
    limit_retained_memory()
    session = pickle.loads(fork) if fork is not None else None  # this task's own copy
    store = session.store if session is not None else base
    written = 0
    for i, (path, meta, config, samples, variants, rewrite) in enumerate(task.blocks):
        written += rewrite(_array(store, path, meta, config), samples, variants)
        if i == 0:
            _pause(task.pause)
    copied = 0
    if task.copies:
        copied = copy_chunks([ChunkCopy(src, src_key, StorePath(store, path), key)
                              for src, src_key, path, key in task.copies])
    release_freed_memory()
    return _Done(session, written, len(task.copies), copied, len(task.blocks) + len(task.copies),
                 os.getpid())


def _array(store, path, meta, config):
    import zarr
    from zarr.core.array import AsyncArray
    from zarr.storage import StorePath

    return zarr.Array(AsyncArray(metadata=meta, store_path=StorePath(store, path), config=config))


def _tasks(blocks: list[Block], copies: list[ChunkCopy], parts: int) -> list[_Task]:
    pause = _test_pause()
    tasks = [_Task([(b.target.async_array.store_path.path, b.target.metadata,
                     b.target.async_array.config, b.samples, b.variants, b.rewrite) for b in part],
                   [], pause)
             for part in _split(blocks, parts)]
    tasks += [_Task([], [(c.src, c.src_key, c.dst.path, c.dst_key) for c in part], pause)
              for part in _split(copies, parts)]
    return tasks


def _split(items: list, parts: int) -> list[list]:
    """``items`` in at most ``parts`` contiguous runs of nearly equal length."""
    if not items:
        return []
    size = -(-len(items) // max(1, min(parts, len(items))))
    return [items[i : i + size] for i in range(0, len(items), size)]


def _writers(store) -> tuple[Any, Any]:
    """(the Icechunk session the arrays belong to, None), or (None, the plain Zarr store tasks
    write into: beneath the coordinator's wrappers, which hold the root documents back)."""
    import icechunk
    from zarr.storage import WrapperStore

    if isinstance(store, icechunk.IcechunkStore):
        return store.session, None
    while isinstance(store, WrapperStore):
        store = store._store
    return None, store


def _lost(exc: BaseException) -> bool:
    """Whether the cluster, not the work, failed: workers died too often, or the scheduler went."""
    import asyncio

    from distributed import KilledWorker
    from distributed.comm import CommClosedError

    return isinstance(exc, KilledWorker | CommClosedError | asyncio.CancelledError)


def _bar(total: int, label: str | None):
    if label is None:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="block", desc=f"{label} (Dask)")


def _test_pause() -> tuple[str, float] | None:
    if os.environ.get("VCZSTORE_TEST_PAUSE_AT") != "task":
        return None
    return (os.environ["VCZSTORE_TEST_PAUSE_MARKER"],
            float(os.environ.get("VCZSTORE_TEST_PAUSE_SECONDS", "60")))


def _pause(pause: tuple[str, float] | None) -> None:
    """The first task to get here writes its worker's PID into the marker and waits (crash tests
    SIGKILL that worker); every other task, and the rerun, goes on."""
    if pause is None:
        return
    marker, seconds = pause
    try:
        os.close(os.open(marker + ".taken", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    with open(marker + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(marker + ".tmp", marker)
    time.sleep(seconds)
