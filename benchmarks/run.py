"""``python -m benchmarks.run [--quick]``: every operation against a baseline measured in the same run.

Each operation runs in a fresh subprocess on a fresh ``cp -r`` copy of a cached store (the copy is
not timed), several times; the table shows the median time of the operation, the median of its
baseline, their ratio and the peak RSS of the operation's process. Results go to the terminal,
to ``benchmarks/out/<size>.json`` and to ``docs/benchmarks.md`` (the section for this size). A run
with ``--only`` replaces just the rows it measured, so a long full-size run can be done in parts.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import fcntl
import json
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import traceback

from benchmarks import data
from benchmarks.data import FULL, QUICK, Dataset, log
from benchmarks.measure import (
    REPO,
    MeasureError,
    Series,
    fresh_copy,
    remove,
    run_process,
    sync_disk,
    worker,
)

DOCS = REPO / "docs" / "benchmarks.md"
OUT = pathlib.Path(__file__).resolve().parent / "out"
HELP_TARGET = 0.5
DAGSTER_TARGET = 30.0
RSS_TARGET_MB = 500
ALIGNED_TARGET = 1.3  # × cp -r of the batch
REGRID_TARGET = 1.2  # × decoding the batch and encoding it on the store's grid, every core
REWRITE_TARGET = 1 / 3  # × a single-core decode + re-encode of the column at the store's level


@dataclasses.dataclass
class Row:
    name: str
    op: Series
    baseline_name: str = ""
    baseline: Series | None = None
    baseline_seconds: float | None = None  # when the baseline is another row's median
    baseline_best_seconds: float | None = None  # ... and its best run
    target: str = ""
    check: object = None  # check(op_seconds, baseline_seconds, peak_rss_mb) -> bool
    note: str = ""
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def base(self) -> float | None:
        if self.baseline is not None:
            return self.baseline.median
        return self.baseline_seconds

    @property
    def base_best(self) -> float | None:
        if self.baseline is not None and self.baseline.runs:
            return min(self.baseline.all_seconds)
        return self.baseline_best_seconds

    @property
    def best(self) -> float | None:
        return min(self.op.all_seconds) if self.op.runs else None

    @property
    def ratio(self) -> float | None:
        if self.op.median is None or not self.base:
            return None
        return self.op.median / self.base

    @property
    def met(self) -> bool | None:
        if self.check is None or self.op.median is None:
            return None
        return bool(self.check(self.op.median, self.base, self.op.max_rss_mb))

    @property
    def met_best(self) -> bool | None:
        if self.check is None or self.best is None:
            return None
        return bool(self.check(self.best, self.base_best, self.op.max_rss_mb))

    def as_dict(self) -> dict:
        best_ratio = self.best / self.base_best if self.best and self.base_best else None
        return {
            "name": self.name, "median_s": self.op.median, "best_s": self.best,
            "runs_s": self.op.all_seconds,
            "process_median_s": self.op.process_median, "peak_rss_mb": self.op.max_rss_mb,
            "baseline": self.baseline_name, "baseline_median_s": self.base,
            "baseline_best_s": self.base_best,
            "baseline_runs_s": self.baseline.all_seconds if self.baseline else None,
            "baseline_peak_rss_mb": self.baseline.max_rss_mb if self.baseline else None,
            "ratio": self.ratio, "ratio_best": best_ratio, "target": self.target,
            "met": self.met, "met_best": self.met_best, "note": self.note, "info": self.info,
        }


class Bench:
    def __init__(self, ds: Dataset, runs: int | None, only: set[str] | None):
        self.ds = ds
        self.size = ds.size
        self.forced_runs = runs is not None
        self.runs = runs or ds.size.runs
        self.heavy = runs or ds.size.heavy_runs
        self.only = only
        self.work = ds.dir / "work"
        self.rows: list[Row] = []
        self.keyed_rows: list[tuple[str, Row]] = []

    # ------------------------------------------------------------------ helpers
    def wanted(self, key: str) -> bool:
        return self.only is None or key in self.only

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.name == name), None)

    def need(self, *names: str) -> None:
        if self.ds.missing(names):
            # Built in a child: the harness would keep the build's memory, and every process it
            # starts afterwards reports at least that as its peak RSS (fork + exec inherit it).
            subprocess.run([sys.executable, "-m", "benchmarks.data", self.size.name, *names],
                           cwd=REPO, check=True)

    def measure(self, label: str, series: Series, cmd: list[str], *, setup=None, cleanup=(),
                env: dict | None = None, run: int = 0, total: int | None = None):
        if setup is not None:
            setup()
        sync_disk()
        try:
            m = series.add(run_process(cmd, env=env))
        finally:
            for p in cleanup:
                remove(p)
        extra = f", {m.info}" if m.info else ""
        log(f"  {label} run {run + 1}/{total or self.runs}: {m.seconds:.3f} s "
            f"(process {m.process_seconds:.2f} s, peak RSS {m.max_rss_mb:.0f} MB{extra})")
        return m

    def cp(self, src: pathlib.Path) -> list[str]:
        return ["cp", "-r", str(src), str(self.work / "cp-target")]

    def store_copy(self, src: pathlib.Path):
        target = self.work / "store"
        return target, (lambda: fresh_copy(src, target))

    # ------------------------------------------------------------------ operations
    def bench_init(self):
        self.need("batch1")
        row = Row("init (from batch 1)", Series(), "cp -r batch 1", Series())
        store = self.work / "store"
        for i in range(self.runs):
            self.measure("cp -r batch 1", row.baseline, self.cp(self.ds.batch1),
                         cleanup=[self.work / "cp-target"], run=i)
            self.measure("init", row.op, worker("init", store=store, batch=self.ds.batch1),
                         setup=lambda: remove(store), cleanup=[store], run=i)
        self.rows.append(row)

    def bench_convert(self):
        s = self.size
        self.need("vcf", "store_b1", "store_unaligned")
        row = Row(f"convert VCF ({s.vcf_samples} samples) --like store", Series(),
                  "bio2zarr convert of the same VCF", Series())
        offset = Row(f"convert VCF ({s.vcf_samples} samples) --like unaligned store", Series(),
                     "bio2zarr convert of the same VCF", None,
                     note=f"includes laying the batch out at sample offset {self.ds.unaligned_offset}")
        out = self.work / "converted.vcz"
        runs = self.runs if self.forced_runs else s.convert_runs
        for i in range(runs):
            self.measure("bio2zarr convert", row.baseline,
                         worker("convert_baseline", vcf=self.ds.vcf, out=out,
                                variants_chunk=s.variants_chunk, samples_chunk=s.samples_chunk),
                         setup=lambda: remove(out), cleanup=[out], run=i, total=runs)
            self.measure("convert --like", row.op,
                         worker("convert", vcf=self.ds.vcf, out=out, like=self.ds.store_b1),
                         setup=lambda: remove(out), cleanup=[out], run=i, total=runs)
            self.measure("convert --like (unaligned)", offset.op,
                         worker("convert", vcf=self.ds.vcf, out=out, like=self.ds.store_unaligned),
                         setup=lambda: remove(out), cleanup=[out], run=i, total=runs)
        offset.baseline_seconds, offset.baseline_best_seconds = row.base, row.base_best
        self.rows += [row, offset]

    def bench_convert_steps(self):
        """``convert --like`` in 1, 2 and 4 partitions, every step a fresh process (see the
        worker's ``convert_steps``), two at a time (the cores here), against one process,
        interleaved."""
        s = self.size
        self.need("vcf", "store_b1")
        out = self.work / "converted.vcz"
        runs = self.runs if self.forced_runs else s.convert_runs
        base = Series()
        rows = {n: Row(f"convert VCF ({s.vcf_samples} samples) --like store: {n} partition(s), "
                       "every step a process", Series(), "convert --like, one process (interleaved)",
                       base if n == 1 else None,
                       note="steps run 2 at a time (2 cores); each step's process start and "
                            "imports are included, Dagster's own cost per step is not")
                for n in (1, 2, 4)}
        for i in range(runs):
            self.measure("convert --like (one process)", base,
                         worker("convert", vcf=self.ds.vcf, out=out, like=self.ds.store_b1),
                         setup=lambda: remove(out), cleanup=[out], run=i, total=runs)
            for n, row in rows.items():
                m = self.measure(f"convert in {n} partition(s)", row.op,
                                 worker("convert_steps", vcf=self.ds.vcf, out=out,
                                        like=self.ds.store_b1, partitions=n, parallel=2),
                                 setup=lambda: remove(out), cleanup=[out], run=i, total=runs)
                row.info = m.info
        for row in rows.values():
            row.baseline_seconds = base.median
            row.baseline_best_seconds = min(base.all_seconds) if base.runs else None
        self.rows += list(rows.values())

    def bench_append_aligned(self):
        row = Row("append, aligned (fast path)", Series(), "cp -r batch 2", Series(),
                  target=f"≤ {ALIGNED_TARGET}× cp -r")
        self.need("store_b1", "batch2")
        store, setup = self.store_copy(self.ds.store_b1)
        # More runs than most: each writes GBs, and the next run's time depends on how far the
        # virtual disk has got with writing them back (seen: cp -r 1.1 s to 8.7 s, same bytes).
        runs = self.runs if self.forced_runs else max(self.runs, 5)
        for i in range(runs):
            self.measure("cp -r batch 2", row.baseline, self.cp(self.ds.batch2),
                         cleanup=[self.work / "cp-target"], run=i, total=runs)
            m = self.measure("append", row.op, worker("append", store=store, batch=self.ds.batch2),
                             setup=setup, cleanup=[store], run=i, total=runs)
            row.info = m.info
        row.check = lambda op, base, rss: op <= ALIGNED_TARGET * base
        self.rows.append(row)

    def bench_append_unaligned(self):
        n0 = self.size.samples_per_batch - self.size.unaligned_short
        row = Row(f"append, unaligned (store holds {n0} samples)", Series(),
                  "aligned append, interleaved", Series(), target="≤ 1.5× aligned append")
        self.need("store_b1", "batch2", "store_unaligned", "batch2_offset")
        self._interleaved_appends(row, ("aligned append", self.ds.store_b1, self.ds.batch2),
                                  ("append (offset layout)", self.ds.store_unaligned,
                                   self.ds.batch2_offset))

    def bench_append_float_codec(self):
        """The unaligned append onto a store created with ``--float-compression``, against the
        aligned append onto the same kind of store."""
        codec = data.FAST_FLOAT_CODEC
        n0 = self.size.samples_per_batch - self.size.unaligned_short
        row = Row(f"append, unaligned ({n0} samples), float fields {codec}", Series(),
                  f"aligned append, float fields {codec}", Series(), target="≤ 1.5× aligned append")
        self.need("store_b1_fast", "store_unaligned_fast", "batch2_fast", "batch2_offset_fast")
        fast = self.ds.fast
        row.note = (f"stores made with `init --float-compression {codec}` (bio2zarr's float codec is "
                    "zstd:7); batches re-encoded to it as `convert --like` makes them")
        self._interleaved_appends(row, (f"aligned append ({codec})", fast["store-b1"],
                                        fast["batch2.vcz"]),
                                  (f"unaligned append ({codec})", fast["store-unaligned"],
                                   fast["batch2-offset.vcz"]))

    def _interleaved_appends(self, row: Row, aligned, unaligned) -> None:
        """``row``: the unaligned append (label, store, batch) against the aligned one, run by run
        in turn: both write GBs, so they share the disk's state (5 runs each, like the aligned
        row)."""
        runs = self.runs if self.forced_runs else max(self.runs, 5)
        sides = []
        for (label, cached, batch), series in ((aligned, row.baseline), (unaligned, row.op)):
            store, setup = self.store_copy(cached)
            sides.append((label, series, worker("append", store=store, batch=batch), setup, store))
        for i in range(runs):
            for label, series, cmd, setup, store in sides:
                m = self.measure(label, series, cmd, setup=setup, cleanup=[store], run=i, total=runs)
            row.info = m.info
        row.check = lambda op, base, rss: op <= 1.5 * base
        self.rows.append(row)

    def bench_append_reencode(self):
        s = self.size
        self.need("store_b1", "batch2", "batch2_rechunked")
        row = Row(f"append, re-encode all (batch: chunks of {s.reencode_samples_chunk} samples, "
                  f"blosc {data.FOREIGN_CODEC['cname']})", Series(),
                  "decode batch + encode on the store's grid (fast level)", Series(),
                  target=f"≤ {REGRID_TARGET}× baseline")
        store, setup = self.store_copy(self.ds.store_b1)
        out = self.work / "reencoded"
        runs = self.runs if self.forced_runs else s.reencode_all_runs
        for i in range(runs):
            self.measure("decode + encode on the store's grid", row.baseline,
                         worker("regrid_baseline", src=self.ds.batch2_rechunked, like=self.ds.batch2,
                                out=out, level="fast"),
                         setup=lambda: remove(out), cleanup=[out], run=i, total=runs)
            m = self.measure("append (re-encode)", row.op,
                             worker("append", store=store, batch=self.ds.batch2_rechunked),
                             setup=setup, cleanup=[store], run=i, total=runs)
            row.info = m.info
        row.check = lambda op, base, rss: op <= REGRID_TARGET * base
        self.rows.append(row)

    def bench_append_own_grid(self):
        """Batch 2 as plain bio2zarr lays it out (its own sample grid, from 0) onto the store whose
        last column is partial: nothing can be copied, every column is re-encoded (at the fast
        level); the floor decodes the batch and encodes it on the store's grid, every core."""
        n0 = self.size.samples_per_batch - self.size.unaligned_short
        row = Row(f"append, batch on its own grid onto {n0} samples (re-encodes all of it)",
                  Series(), "decode batch + encode on the store's grid (fast level)", Series(),
                  target=f"≤ {REGRID_TARGET}× baseline")
        self.need("store_unaligned", "batch2")
        store, setup = self.store_copy(self.ds.store_unaligned)
        out = self.work / "reencoded"
        runs = self.heavy
        for i in range(runs):
            self.measure("decode + encode on the store's grid (offset)", row.baseline,
                         worker("regrid_baseline", src=self.ds.batch2, like=self.ds.batch2, out=out,
                                offset=self.ds.unaligned_offset, level="fast"),
                         setup=lambda: remove(out), cleanup=[out], run=i, total=runs)
            m = self.measure("append (own grid)", row.op,
                             worker("append", store=store, batch=self.ds.batch2),
                             setup=setup, cleanup=[store], run=i, total=runs)
            row.info = m.info
        row.note = (f"store columns from sample {n0} on: batch sample j goes to store column "
                    f"(j + {self.ds.unaligned_offset}) // {self.size.samples_chunk}; the baseline "
                    "decodes each batch chunk once and encodes at level 1 of the store's codec")
        row.check = lambda op, base, rss: op <= REGRID_TARGET * base
        self.rows.append(row)

    def _remove(self, name: str, indexes: list[int], baseline_columns: dict[str, list[int]],
                baseline_name: str, target: str = "", workers: int | None = None) -> Row:
        row = Row(name, Series(), baseline_name, Series(), target=target)
        self.need("store_b12", *baseline_columns)
        store, setup = self.store_copy(self.ds.store_b12)
        out = self.work / "reencoded"
        ids = [self.ds.sample_id(i) for i in indexes]
        batches = [str(getattr(self.ds, b)) for b in baseline_columns]
        runs = self.heavy
        for i in range(runs):
            self.measure("decode + re-encode touched chunks", row.baseline,
                         worker("reencode_baseline", batches=batches,
                                columns=list(baseline_columns.values()), out=out, workers=workers),
                         setup=lambda: remove(out), cleanup=[out], run=i, total=runs)
            m = self.measure(name, row.op, worker("remove", store=store, samples=ids),
                             setup=setup, cleanup=[store], run=i, total=runs)
            row.info = m.info
        self.rows.append(row)
        return row

    def bench_remove(self):
        n, s = self.size.samples_per_batch, self.size.samples_chunk
        # Both in batch 2 (store columns n/s and n/s + 1; columns 0 and 1 of batch 2).
        one = self._remove("remove 1 sample", [n + s // 2], {"batch2": [0]},
                           "decode + re-encode its column, store's level, one core",
                           target="≤ 1/3 baseline", workers=1)
        one.check = lambda op, base, rss: op <= REWRITE_TARGET * base
        hundred = self._remove(f"remove 100 samples (one chunk column of {s})",
                               [n + s + k for k in range(min(100, s))], {"batch2": [1]},
                               "decode + re-encode their column (every core)",
                               target="≤ 1.5× remove 1")
        # Its target is against remove 1: show remove 1 as its baseline (its own re-encode baseline
        # is in the JSON output).
        hundred.note = (f"its own decode + re-encode baseline: median {fmt_s(hundred.base)}; the "
                        "baseline column shows remove 1")
        hundred.baseline_name, hundred.baseline = "remove 1 sample", one.op
        hundred.check = lambda op, base, rss: op <= 1.5 * base
        total = 2 * n
        cols = list(range(-(-n // s)))
        if not self.size.spread_removal and not self.forced_runs:
            self.rows.append(Row("remove 100 samples (spread over every column)", Series(),
                                 note="skipped at this size: it rewrites every chunk of the store "
                                      "(about 10× remove 1; see the quick-size table)"))
            return
        spread = self._remove("remove 100 samples (spread over every column)",
                              [k * (total // 100) for k in range(100)],
                              {"batch1": cols, "batch2": cols},
                              "decode + re-encode every column")
        spread.note = "informational: touches every chunk column, so every chunk is rewritten"

    def bench_dask(self):
        """Remove of one column and the unaligned append, here against a Dask cluster of 1 and
        of 2 workers on this machine (each started once, outside the timings: a running scheduler
        is the usual case), run by run in turn."""
        from benchmarks.services import DaskCluster

        n, s = self.size.samples_per_batch, self.size.samples_chunk
        self.need("store_b12", "store_unaligned", "batch2_offset")
        runs = self.runs if self.forced_runs else max(self.runs, 3)
        ids = [self.ds.sample_id(n + s // 2)]
        for workers in (1, 2):
            cluster_name = f"{workers}-worker Dask cluster"
            remove_row = Row(f"remove 1 sample, {cluster_name}", Series(),
                             "remove 1 sample, here (interleaved)", Series(),
                             note=f"a LocalCluster of {workers} worker process(es) × 1 thread on "
                                  "this machine")
            append_row = Row(f"append, unaligned, {cluster_name}", Series(),
                             "append, unaligned, here (interleaved)", Series(),
                             note="the same cluster; the batch copies and the shared column in "
                                  "tasks")
            with DaskCluster(workers) as cluster:
                log(f"  {cluster_name} at {cluster.address}")
                for row, cached, op, kwargs in (
                        (remove_row, self.ds.store_b12, "remove", dict(samples=ids)),
                        (append_row, self.ds.store_unaligned, "append",
                         dict(batch=self.ds.batch2_offset))):
                    store, setup = self.store_copy(cached)
                    for i in range(runs):
                        for label, series, scheduler in (("here", row.baseline, None),
                                                         ("Dask", row.op, cluster.address)):
                            m = self.measure(f"{op} ({label}, {workers} worker(s))", series,
                                             worker(op, store=store, dask_scheduler=scheduler,
                                                    **kwargs),
                                             setup=setup, cleanup=[store], run=i, total=runs)
                            if scheduler is not None:
                                row.info = m.info
                    self.rows.append(row)

    def bench_purge(self):
        row = Row("purge (redact 1 release, expire, GC)", Series(),
                  note="includes the wait for a GC cutoff (whole seconds, less one) after main's "
                       "last commit, 1-2 s; redacting the release re-encodes the removed sample's chunk column")
        redaction = Row("purge: redacting the release", Series(),
                        "decode + re-encode its column, store's level, one core", Series(),
                        target="≤ 1/3 baseline",
                        note="the redaction alone (timed around the engine's redaction of the "
                             "release: blanking the sample's column on the release's branch, "
                             "recomputing its statistics, the commit and tag)")
        self.need("store_purge", "batch2")
        store, setup = self.store_copy(self.ds.store_purge)
        out = self.work / "reencoded"
        runs = self.heavy
        # store_purge removed sample n + 1: store column n / s, column 0 of batch 2
        for i in range(runs):
            self.measure("decode + re-encode the column, one core", redaction.baseline,
                         worker("reencode_baseline", batches=[str(self.ds.batch2)], columns=[[0]],
                                out=out, workers=1),
                         setup=lambda: remove(out), cleanup=[out], run=i, total=runs)
            m = self.measure("purge", row.op, worker("purge", store=store), setup=setup,
                             cleanup=[store], run=i, total=runs)
            row.info = m.info
            if "redact_seconds" in m.info:
                redaction.op.add(dataclasses.replace(m, seconds=m.info["redact_seconds"]))
        redaction.check = lambda op, base, rss: op <= REWRITE_TARGET * base
        self.rows += [row, redaction]

    def bench_tag(self):
        row = Row("tag (release + recomputed statistics)", Series(),
                  "decode every call_genotype chunk", Series())
        self.need("store_b12")
        store, setup = self.store_copy(self.ds.store_b12)
        batches = [str(self.ds.batch1), str(self.ds.batch2)]
        for i in range(self.runs):
            self.measure("decode genotypes", row.baseline,
                         worker("decode_genotypes", batches=batches), run=i)
            self.measure("tag", row.op, worker("tag", store=store, name=f"bench-{i}"),
                         setup=setup, cleanup=[store], run=i)
        self.rows.append(row)

    def bench_info(self):
        row = Row("info", Series(), "open repo + read sample_id", Series())
        self.need("store_b12")
        for i in range(self.runs):
            self.measure("open + read ids", row.baseline,
                         worker("open_read_ids", store=self.ds.store_b12), run=i)
            self.measure("info", row.op, worker("info", store=self.ds.store_b12), run=i)
        self.rows.append(row)

    def bench_help(self):
        row = Row("vczstore --help (process)", Series(), "python -c pass", Series(),
                  target=f"< {HELP_TARGET} s")
        exe = pathlib.Path(sys.executable).parent / "vczstore"
        try:
            if not exe.exists():
                raise MeasureError(f"{exe} is not installed")
            n = max(self.runs, 5)
            for i in range(n):
                self.measure("python -c pass", row.baseline, [sys.executable, "-c", "pass"],
                             run=i, total=n)
                self.measure("vczstore --help", row.op, [str(exe), "--help"], run=i, total=n)
        except MeasureError as exc:
            row.note = f"skipped: the CLI is not usable yet ({str(exc).splitlines()[-1][:120]})"
            self.rows.append(row)
            return
        row.check = lambda op, base, rss: op < HELP_TARGET
        self.rows.append(row)

    def bench_s3(self):
        from benchmarks.services import MotoServer

        row = Row("append, aligned, Icechunk on S3 (moto)", Series(), "s3fs put of batch 2", Series(),
                  note="moto_server on 127.0.0.1, restarted for each measurement")
        self.need("batch1", "batch2")
        moto_log = self.work / "moto.log"
        for i in range(self.runs):
            with MotoServer(moto_log) as s3:
                s3.create_bucket("baseline")
                self.measure("s3fs put", row.baseline,
                             worker("s3_put", src=self.ds.batch2, url="s3://baseline/batch2.vcz",
                                    storage_options=s3.options()), run=i)
            with MotoServer(moto_log) as s3:
                s3.create_bucket("bench")
                url = "s3://bench/store"
                run_process(worker("init_s3", store=url, batch=self.ds.batch1,
                                   storage_options=s3.options()))
                m = self.measure("append to S3", row.op,
                                 worker("append", store=url, batch=self.ds.batch2,
                                        storage_options=s3.options()), run=i)
                row.info = m.info
        self.rows.append(row)

    def bench_dagster(self):
        from benchmarks.services import DagsterDev

        row = Row("Dagster: _READY → committed append (dagster dev)", Series(),
                  target=f"< {DAGSTER_TARGET:.0f} s")
        definitions = REPO / "vczstore_dagster" / "definitions.py"
        if not definitions.exists() or not (REPO / "vczstore_dagster" / "dev.py").exists():
            row.note = "not measured yet: the Dagster project is not there"
            self.rows.append(row)
            return
        root = self.work / "dagster"
        phases: dict[str, list[float]] = {}
        remove(root)
        root.mkdir(parents=True)
        try:
            log("  starting dagster dev (allow up to 4 minutes)")
            t0 = time.monotonic()
            with DagsterDev(root) as dev:
                log(f"  dagster dev ready after {time.monotonic() - t0:.0f} s; warm-up batch "
                    "(creates the store)")
                ready = dev.drop_batch("warmup", 20, seed=100)
                done = dev.wait_committed("warmup", timeout=600)
                log(f"  warm-up batch committed {done - ready:.1f} s after _READY")
                for i in range(self.runs):
                    name = f"bench-{i + 1}"
                    ready = dev.drop_batch(name, 20, seed=101 + i)
                    done = dev.wait_committed(name, timeout=600)
                    m = row.op.add(data_measurement(done - ready))
                    ingest = dev.run_times(name).get("ingest_batch", {})
                    parts = {}
                    if ingest.get("startTime"):
                        parts = {"inbox sensor": ingest["creationTime"] - ready,
                                 "queued": ingest["startTime"] - ingest["creationTime"],
                                 "run": done - ingest["startTime"]}
                        for k, v in parts.items():
                            phases.setdefault(k, []).append(v)
                    log(f"  {name}: committed {m.seconds:.1f} s after _READY "
                        f"({', '.join(f'{k} {v:.1f} s' for k, v in parts.items())})")
        except Exception as exc:  # a broken Dagster layer must not lose the other numbers
            row.note = f"failed: {str(exc).strip().splitlines()[0][:200]}"
            log(f"  Dagster benchmark failed: {exc}")
        finally:
            shutil.rmtree(root, ignore_errors=True)
        if row.op.runs:
            row.check = lambda op, base, rss: op < DAGSTER_TARGET
            row.note = (row.note + " " if row.note else "") + (
                "20 samples × 200 variants per batch; sensors every daemon loop (5 s), run queue 1 s; "
                f"runs: {', '.join(f'{s:.1f}' for s in row.op.all_seconds)} s"
                + ("; median phases: " + ", ".join(
                    f"{k} {statistics.median(v):.1f} s" for k, v in phases.items())
                   + " (inbox sensor: _READY → ingest_batch run created; queued: created → "
                   "started, mostly the launch of the run's process; run: started → commit on "
                   "main: stage, check, append)"
                   if phases else ""))
        self.rows.append(row)


def with_rss_target(row: Row) -> None:
    """Every operation's peak RSS stays under RSS_TARGET_MB, whatever its own target."""
    rss = row.op.max_rss_mb
    if rss is None or rss != rss:  # not measured (a service's time, a skipped row)
        return
    check = row.check
    row.check = lambda op, base, peak: peak < RSS_TARGET_MB and (check is None or check(op, base, peak))
    row.target = (f"{row.target}, " if row.target else "") + f"RSS < {RSS_TARGET_MB} MB"


def data_measurement(seconds: float):
    from benchmarks.measure import Measurement

    return Measurement(seconds, seconds, float("nan"), {})


BENCHES = ["init", "convert", "convert_steps", "append_aligned", "append_unaligned",
           "append_float_codec", "append_reencode", "append_own_grid", "remove", "dask",
           "purge", "tag", "info", "help", "s3", "dagster"]


# ---------------------------------------------------------------------------------- reporting
def fmt_s(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.2f} s" if x >= 0.995 else f"{x * 1000:.0f} ms"


def fmt_rss(x: float | None) -> str:
    return "—" if x is None or x != x else f"{x:.0f} MB"


def table(rows: list[dict]) -> list[list[str]]:
    out = [["operation", "median", "best", "baseline", "baseline median", "baseline best",
            "ratio", "ratio (best)", "peak RSS", "process", "target", "met"]]
    verdict = {True: "yes", False: "**no**", None: "—"}
    for r in rows:
        met = verdict[r["met"]]
        if r.get("met_best") is not None and r["met_best"] != r["met"]:
            met += f" ({verdict[r['met_best']].strip('*')} on best runs)"
        out.append([
            r["name"], fmt_s(r["median_s"]), fmt_s(r.get("best_s")), r["baseline"] or "—",
            fmt_s(r["baseline_median_s"]), fmt_s(r.get("baseline_best_s")),
            f"{r['ratio']:.2f}×" if r["ratio"] is not None else "—",
            f"{r['ratio_best']:.2f}×" if r.get("ratio_best") is not None else "—",
            fmt_rss(r["peak_rss_mb"]), fmt_s(r["process_median_s"]), r["target"] or "—", met,
        ])
    return out


def print_table(rows: list[dict]) -> None:
    t = table(rows)
    widths = [max(len(line[i].replace("**", "")) for line in t) for i in range(len(t[0]))]
    for k, line in enumerate(t):
        print("  ".join(c.replace("**", "").ljust(w) for c, w in zip(line, widths, strict=True)))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    for r in rows:
        if r["note"]:
            print(f"  note: {r['name']}: {r['note']}")


def markdown_table(rows: list[dict]) -> str:
    t = table(rows)
    lines = ["| " + " | ".join(t[0]) + " |", "|" + "|".join("---" for _ in t[0]) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in t[1:]]
    return "\n".join(lines)


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "?"


def machine() -> dict:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read())[1])
        mem = f"{kb / 1024**2:.1f} GiB"
    except (OSError, TypeError):
        pass
    cache = data.CACHE
    disk = "?"
    try:
        usage = shutil.disk_usage(cache)
        fs = subprocess.run(["stat", "-f", "-c", "%T", str(cache)], capture_output=True,
                            text=True).stdout.strip()
        dev = subprocess.run(["df", "--output=source", str(cache)], capture_output=True,
                             text=True).stdout.split()[-1]
        rota = subprocess.run(["lsblk", "-ndo", "ROTA,MODEL", dev], capture_output=True,
                              text=True).stdout.strip()
        kind = {"0": "non-rotational", "1": "rotational as the VM reports it"}.get(rota[:1], "")
        disk = (f"{dev} ({fs}{', ' + kind if kind else ''}), {usage.total / 1e9:.0f} GB, "
                f"{usage.free / 1e9:.0f} GB free")
    except Exception:
        pass
    os_name = platform.platform()
    try:
        os_name = re.search(r'PRETTY_NAME="([^"]+)"', open("/etc/os-release").read())[1] + \
            f", kernel {platform.release()}"
    except (OSError, TypeError):
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    versions = {m: _version(m) for m in ("icechunk", "zarr", "numcodecs", "numpy", "bio2zarr",
                                         "msprime", "s3fs", "moto", "dagster")}
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "disk": disk, "os": os_name,
            "python": platform.python_version(), "versions": versions, "commit": commit}


def markdown_section(payload: dict) -> str:
    s = payload["size"]
    m = payload["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    sessions = payload["sessions"]
    when = "; ".join(
        x["text"] if "text" in x else
        f"{x['started']} on `{x.get('commit', m['commit'])}` ({x['only'] or 'all operations'}; {x['runs']}; "
        f"{x['minutes']:.0f} min; load average {x['load']})" for x in sessions)
    rows = payload["rows"]
    lines = [
        f"### {s['name'].capitalize()} size: {2 * s['samples_per_batch']:,} samples × "
        f"{s['num_variants']:,} variants",
        "",
        f"Batches of {s['samples_per_batch']:,} samples; chunks {s['variants_chunk']:,} variants × "
        f"{s['samples_chunk']:,} samples; stores on local disk unless said. One batch is "
        f"{payload['batch_mb']:,.0f} MB on disk, the two-batch store {payload['store_mb']:,.0f} MB.",
        "",
        f"Measured {when}.",
        "",
        markdown_table(rows),
        "",
    ]
    notes = [f"- {r['name']}: {r['note']}" for r in rows if r["note"]]
    if notes:
        lines += ["Notes:", "", *notes, ""]
    lines += [
        "Machine:",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores",
        f"- Memory: {m['memory']}",
        f"- Disk: {m['disk']}",
        f"- OS: {m['os']}",
        f"- Python {m['python']}; {versions}",
        "",
    ]
    return "\n".join(lines)


DOCS_HEADER = """# Benchmarks

`make bench` (full size, 10,000 samples × 100,000 variants) and `make bench QUICK=1`
(1,000 × 10,000) run `python -m benchmarks.run`. Each operation runs in a fresh subprocess on a
fresh `cp -r` copy of a cached store (the copy is not timed), several times, interleaved with its
baseline. Columns:

- **median**, **best**: the operation's time, measured inside its process after the imports
  (opening the store included); median and fastest of the runs.
- **baseline**: a physical lower bound measured in the same run on the same bytes: `cp -r` of the
  batch for appends, a decode + re-encode of the touched chunks with the same codecs for removals,
  plain bio2zarr for conversion, an s3fs upload for S3. **ratio** = median / baseline median;
  **ratio (best)** = best / baseline best, the less noisy one on a shared machine.
- **peak RSS**: the largest resident set of the operation's process (`wait4`).
- **process**: the median wall time of the whole process (interpreter start and imports included).
- **met**: the target checked on the medians (and, where it differs, on the best runs).

Cost: the quick run takes about 5 minutes on a quiet machine (its data, 0.4 GB, about a minute
to build). The full data take about 30 GB in `benchmarks/.cache/full/` and roughly an hour to build
the first time (encoding LRR/BAF with bio2zarr's codec is slow, see below); the full run then takes
about 25 minutes and needs another ~10 GB free for its working copies.

`python -m benchmarks.run [--quick] --only remove,purge` re-measures some rows and merges them
into the last results (`benchmarks/out/<size>.json`); `--render` only rewrites this page.
`python -m benchmarks.phases OP JSON` runs one operation of `benchmarks/worker.py` with wall-clock
timers around the engine's steps; `python -m benchmarks.profile OP JSON` runs it under py-spy
(not a project dependency) and prints where the CPU time goes in every thread.

Data: msprime (`sim_ancestry` + `sim_mutations`, first N biallelic sites) genotypes with two float32
FORMAT fields like a genotyping array's: LRR ~ N(0, 0.2) and BAF clustered at 0, 0.5 and 1 by
genotype with noise, both to 4 decimals. They dominate the bytes. A real VCF of 100 samples over
the same variants is converted by bio2zarr; that conversion is the template (array names,
dimensions, dtypes, codecs, attributes) for the batch VCZs, which are written directly. The batch
that must be re-encoded comes "from another tool": sample chunks of 800 (80 quick) and blosc lz4.
"""


def write_docs(section_key: str, section: str) -> None:
    """Rewrite docs/benchmarks.md: the header, this size's section (the other size's section as
    it was) and, unchanged, whatever follows the sections (written by hand)."""
    text = DOCS.read_text() if DOCS.exists() else ""
    blocks, tail = {}, ""
    for key in ("full", "quick"):
        m = re.search(rf"<!-- BEGIN {key} -->\n(.*?)\n<!-- END {key} -->", text, flags=re.S)
        blocks[key] = m[1] if m else f"_{key.capitalize()} size: not run yet._"
    ends = [m.end() for m in re.finditer(r"<!-- END \w+ -->", text)]
    if ends:
        tail = text[max(ends):].strip("\n")
    blocks[section_key] = section.strip("\n")
    parts = [DOCS_HEADER.rstrip("\n"), "", "## Results", ""]
    for key in ("full", "quick"):
        parts += [f"<!-- BEGIN {key} -->", blocks[key], f"<!-- END {key} -->", ""]
    if tail:
        parts += [tail, ""]
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text("\n".join(parts))


def merge(size, rows: list[dict], session: dict, *, partial: bool, ds: Dataset) -> dict:
    """This run's rows into ``benchmarks/out/<size>.json``: a partial run (``--only``) replaces
    the rows it measured and keeps the others; a full run starts afresh. Called after every
    benchmark, so an interrupted run keeps what it measured."""
    path = OUT / f"{size.name}.json"
    old = {}
    if partial:
        old = json.loads(path.read_text()) if path.exists() else from_docs(size.name)
    measured = {r["bench"] for r in rows}
    kept = [r for r in old.get("rows", []) if r.get("bench") not in measured]
    merged = sorted(kept + rows, key=lambda r: BENCHES.index(r["bench"]) if r.get("bench") in BENCHES
                    else len(BENCHES))
    payload = {
        "size": dataclasses.asdict(size),
        "machine": machine(),
        "sessions": [x for x in old.get("sessions", []) if x["started"] != session["started"]]
        + [session],
        "rows": merged,
        "batch_mb": data._du(ds.batch2) / 1e6 if ds.batch2.exists() else old.get("batch_mb", 0),
        "store_mb": data._du(ds.store_b12) / 1e6 if ds.store_b12.exists() else old.get("store_mb", 0),
    }
    OUT.mkdir(exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    return payload


def from_docs(size_name: str) -> dict:
    """The rows and sessions of this size's section of docs/benchmarks.md, as ``merge`` keeps them
    (the JSON results are not committed: a partial run on a fresh clone keeps the published rows
    it does not re-measure). Values come back as rounded as the page shows them."""
    text = DOCS.read_text() if DOCS.exists() else ""
    m = re.search(rf"<!-- BEGIN {size_name} -->\n(.*?)\n<!-- END {size_name} -->", text, flags=re.S)
    if not m:
        return {}
    section = m[1]
    when = re.search(r"^Measured (.*)\.$", section, flags=re.M)
    notes = section.split("Notes:", 1)[1].split("Machine:")[0] if "Notes:" in section else ""
    header = table([])[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| ") else []
        if len(cells) != len(header) or cells[0] == header[0]:
            continue
        c = dict(zip(header, cells, strict=True))
        met, _, best = c["met"].partition(" (")
        verdict = {"yes": True, "**no**": False, "no": False}
        rows.append({
            "name": c["operation"], "bench": _bench_of(c["operation"]),
            "median_s": _parse(c["median"]), "best_s": _parse(c["best"]),
            "baseline": "" if c["baseline"] == "—" else c["baseline"],
            "baseline_median_s": _parse(c["baseline median"]),
            "baseline_best_s": _parse(c["baseline best"]),
            "ratio": _parse(c["ratio"]), "ratio_best": _parse(c["ratio (best)"]),
            "peak_rss_mb": _parse(c["peak RSS"]), "process_median_s": _parse(c["process"]),
            "target": "" if c["target"] == "—" else c["target"],
            "met": verdict.get(met), "met_best": verdict.get(best.split(" ")[0]) if best else None,
            "note": next((line[len(c["operation"]) + 4:] for line in notes.splitlines()
                          if line.startswith(f"- {c['operation']}: ")), ""), "info": {},
        })
    return {"sessions": [{"started": "", "text": when[1]}] if when else [], "rows": rows}


def _parse(cell: str) -> float | None:
    """A number as ``table`` shows it: "2.86 s", "47 ms", "2.07×", "203 MB"; "—" is None."""
    number = re.match(r"^([\d.]+) ?(ms|s|×|MB)$", cell)
    if not number:
        return None
    return float(number[1]) / (1000 if number[2] == "ms" else 1)


def _bench_of(name: str) -> str:
    """The benchmark that measures the row called ``name``."""
    rules = [("Icechunk on S3", "s3"), ("Dask", "dask"), ("float fields", "append_float_codec"),
             ("append, aligned", "append_aligned"), ("append, unaligned", "append_unaligned"),
             ("append, re-encode all", "append_reencode"), ("own grid", "append_own_grid"),
             ("init", "init"), ("convert", "convert"), ("remove", "remove"), ("purge", "purge"),
             ("tag", "tag"), ("info", "info"), ("--help", "help"), ("Dagster", "dagster")]
    return next((bench for key, bench in rules if key in name), "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 samples × 10,000 variants")
    parser.add_argument("--runs", type=int, default=None, help="runs per operation (default 3)")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated subset of: {', '.join(BENCHES)}")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite docs/benchmarks.md from benchmarks/out/<size>.json")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    if args.render:
        payload = json.loads((OUT / f"{size.name}.json").read_text())
        print_table(payload["rows"])
        write_docs(size.name, markdown_section(payload))
        return 0
    only = set(args.only.split(",")) if args.only else None
    if only and only - set(BENCHES):
        parser.error(f"unknown: {', '.join(sorted(only - set(BENCHES)))}")
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    t0 = time.monotonic()
    ds = Dataset(size)
    ds.dir.mkdir(parents=True, exist_ok=True)
    running = open(ds.dir / ".run.lock", "a")  # noqa: SIM115 (held until the process exits)
    try:
        fcntl.flock(running, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log(f"another benchmark run is using {ds.dir} (its scratch folder would be deleted "
            "under it): wait for it to finish")
        return 2
    log(f"data: {size.name} size ({2 * size.samples_per_batch} samples × {size.num_variants} "
        f"variants) in {ds.dir}")
    load_start = os.getloadavg()
    bench = Bench(ds, args.runs, only)
    shutil.rmtree(bench.work, ignore_errors=True)
    bench.work.mkdir(parents=True)
    failed = []

    commit = machine()["commit"]

    def session() -> dict:
        return {
            "started": started, "commit": commit, "only": args.only or "", "minutes": (time.monotonic() - t0) / 60,
            "runs": f"{bench.runs} runs, {bench.heavy} for column re-encodes"
                    + ("" if bench.forced_runs else f", {max(bench.runs, 5)} for the appends without a re-encode of everything, "
                       f"{size.reencode_all_runs} for re-encode all, {size.convert_runs} for conversions"),
            "load": f"{load_start[0]:.1f} → {os.getloadavg()[0]:.1f}",
        }

    first = True
    payload = None
    for key in BENCHES:
        if not bench.wanted(key):
            continue
        log(f"benchmark: {key}")
        before = len(bench.rows)
        try:
            getattr(bench, f"bench_{key}")()
        except Exception as exc:
            traceback.print_exc()
            failed.append(key)
            bench.rows.append(Row(key, Series(), note=f"failed: {str(exc).strip().splitlines()[0][:200]}"))
        for r in bench.rows[before:]:
            with_rss_target(r)
        bench.keyed_rows += [(key, r) for r in bench.rows[before:]]
        measured = [{**r.as_dict(), "bench": key} for r in bench.rows[before:]]
        payload = merge(size, measured, session(), partial=only is not None or not first, ds=ds)
        first = False
    shutil.rmtree(bench.work, ignore_errors=True)
    elapsed = time.monotonic() - t0
    rows = [{**r.as_dict(), "bench": key} for key, r in bench.keyed_rows]
    if payload is None:
        payload = merge(size, [], session(), partial=True, ds=ds)
    print()
    print_table(rows)
    if not args.no_docs:
        write_docs(size.name, markdown_section(payload))
        log(f"wrote {DOCS.relative_to(REPO)}"
            + (" (this run's rows merged with the previous runs')" if only else ""))
    missed = [r["name"] for r in rows if r["met"] is False]
    if missed:
        log(f"targets missed: {'; '.join(missed)}")
    log(f"done in {elapsed / 60:.1f} min")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

