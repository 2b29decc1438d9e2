"""Wall-clock phases of one benchmark operation: where the time of the calling thread goes.

    python -m benchmarks.phases OP JSON_ARGS

runs ``benchmarks.worker OP JSON_ARGS`` with timers around the engine's steps (the compatibility
check, the chunk copy, the re-encodes, zarr reads and writes, Icechunk's commit and branch moves)
and prints the seconds and share of each. Sampling profilers see little of an append, whose time
is spent in Icechunk's Rust threads; these timers see it from the caller's side. Nested phases are
counted in each (a zarr read inside a re-encode counts in both).
"""

from __future__ import annotations

import collections
import functools
import importlib
import json
import sys
import time

TARGETS = [
    "vczstore_dagster.store.append:check_against_group",
    "vczstore_dagster.store.append:write_samples",
    "vczstore_dagster.store.append:copy_chunks",
    "vczstore_dagster.store.append:run_blocks",
    "vczstore_dagster.store.remove:run_blocks",
    "vczstore_dagster.store.append:read_ledger",
    "vczstore_dagster.store.append:write_ledger",
    "vczstore_dagster.store.append:_digest",
    "vczstore_dagster.store.remove:locate",
    "vczstore_dagster.store.remove:blank_samples",
    "vczstore_dagster.store.remove:scrub_attributes",
    "vczstore_dagster.store.purge:_redact_if_needed",
    "vczstore_dagster.store.purge:blank_samples",
    "vczstore_dagster.store.append:read_by_source_chunk",
    "vczstore_dagster.store.purge:write_release_stats",
    "vczstore_dagster.store.purge:scrub_attributes",
    "vczstore_dagster.store.release:write_release_stats",
    "vczstore_dagster.store.location:open_store",
    "zarr:Array.__getitem__",
    "zarr:Array.__setitem__",
    "zarr:Array.resize",
    "icechunk:Session.commit",
    "icechunk:Repository.reset_branch",
    "icechunk:Repository.create_branch",
    "icechunk:Repository.delete_branch",
    "icechunk:Repository.readonly_session",
    "icechunk:Repository.expire_snapshots",
    "icechunk:Repository.garbage_collect",
]

totals: collections.Counter = collections.Counter()
counts: collections.Counter = collections.Counter()
depth: collections.Counter = collections.Counter()


def _wrap(label, fn):
    @functools.wraps(fn)
    def timed(*args, **kwargs):
        depth[label] += 1
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            depth[label] -= 1
            if depth[label] == 0:  # recursion counts once
                totals[label] += time.perf_counter() - t0
            counts[label] += 1

    return timed


def install() -> None:
    for target in TARGETS:
        module_name, _, attr = target.partition(":")
        try:
            owner = importlib.import_module(module_name)
        except ImportError:
            continue
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        if owner is None or not hasattr(owner, name):
            continue
        setattr(owner, name, _wrap(attr, getattr(owner, name)))


def main() -> None:
    from benchmarks import worker
    from benchmarks.measure import RESULT_PREFIX

    op, kwargs = sys.argv[1], json.loads(sys.argv[2])
    worker._engine()
    install()
    t0 = time.perf_counter()
    getattr(worker, f"op_{op}")(**kwargs)
    total = time.perf_counter() - t0
    print(RESULT_PREFIX + json.dumps({"seconds": total, "info": {}}))
    print(f"{op}: {total:.2f} s in all")
    for label, seconds in totals.most_common():
        print(f"  {seconds:8.2f} s  {100 * seconds / total:5.1f}%  {label} ({counts[label]} calls)")


if __name__ == "__main__":
    main()
