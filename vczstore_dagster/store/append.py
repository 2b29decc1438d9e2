"""Append a batch of new samples as one atomic commit.

Chunk arithmetic: the store holds ``n0`` samples in columns of ``S`` samples. Store column
``c0 = n0 // S`` is partial when ``r = n0 % S > 0``. A batch laid out with ``sample_offset == r``
has its column ``j`` on store column ``c0 + j``, so every column but the partial one is copied as
encoded bytes; the partial column is merged and re-encoded. A batch on any other grid or encoding
is re-encoded one variant chunk at a time, one store column after the other, each of the batch's
chunks decoded once, so memory stays bounded by a few chunks whatever the batch size. Whatever is
re-encoded is written at the fast level of the store's codec (:mod:`~vczstore_dagster.store.recompress`),
and the ledger lists those columns.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time

import numpy as np

from vczstore_dagster.store import schema
from vczstore_dagster.store.alleles import widen_store
from vczstore_dagster.store.batch import Batch, check_batch_id, open_batch
from vczstore_dagster.store.blocks import Block, array_blocks, seen_as, trailing_chunks
from vczstore_dagster.store.chunkcodec import SourceRow, regrid_row
from vczstore_dagster.store.chunkcopy import ChunkCopy, column_copies
from vczstore_dagster.store.cluster import Cluster, ClusterWork, connect, run_work
from vczstore_dagster.store.compatibility import CompatibilityReport, Finding, check_against_group
from vczstore_dagster.store.errors import AuditError, IncompatibleBatchError, InvalidInputError
from vczstore_dagster.store.findings import refusal
from vczstore_dagster.store.ledger import BatchRecord, now, read_ledger, write_ledger
from vczstore_dagster.store.policy import Thresholds
from vczstore_dagster.store.recompress import fast_level, note_fast_columns, writes_faster
from vczstore_dagster.store.transaction import commit

log = logging.getLogger(__name__)
# INFO fields computed from the samples: they describe only the first batch once others arrive.
SAMPLE_DERIVED_INFO = ("variant_AC", "variant_AN", "variant_AF", "variant_NS", "variant_DP")


@dataclasses.dataclass
class AppendResult:
    batch_id: str
    snapshot_id: str | None
    samples_before: int
    samples_after: int
    chunks_copied: int
    chunks_reencoded: int
    bytes_copied: int
    fast_path: bool
    seconds: float
    findings: list[Finding]
    attempts: int = 1
    cluster: ClusterWork | None = None  # what ran on a Dask cluster

    @property
    def num_samples_added(self) -> int:
        return self.samples_after - self.samples_before


@dataclasses.dataclass
class _Work:
    chunks_copied: int = 0
    chunks_reencoded: int = 0
    bytes_copied: int = 0
    samples_before: int = 0
    ids_before_digest: str = ""
    fast_columns: set[int] = dataclasses.field(default_factory=set)  # re-encoded, at the fast level


def append_batch(store, batch_path, *, batch_id: str | None = None, progress: bool = False,
                 allow_new_alleles: bool = False,
                 thresholds: Thresholds | None = None,
                 dask_scheduler: str | Cluster | None = None) -> AppendResult:
    """Append the batch at ``batch_path``; refuses (store untouched) when the check finds errors.

    The check's variant plan is carried out: new ALT alleles that harmonisation found in the
    batch are refused unless ``allow_new_alleles``, then added to the store's sites in the same
    commit; ``thresholds``: the coverage the batch must reach (default :class:`Thresholds`).
    ``dask_scheduler``: run the chunk copies and re-encodes on that Dask cluster (an address, or
    ``local``); the batch must then be readable by the workers at the same path."""
    t0 = time.perf_counter()
    batch = open_batch(batch_path)
    batch_id = check_batch_id(batch_id or batch.name.removesuffix(".vcz"))
    checked_at = store.main_snapshot()  # taken before the read: a later main only means a recheck
    head = store.readonly_group()
    report = check_against_group(head, batch, allow_new_alleles=allow_new_alleles,
                                 thresholds=thresholds)
    _refuse_if_bad(report, batch, batch_id, read_ledger(head))
    new_alleles = report.plan.new_alleles
    batch_ids = batch.sample_ids()

    def operation(group, parent):
        ledger = read_ledger(group)
        if parent is None or parent != checked_at:  # main moved since the check (or no history)
            current = check_against_group(group, batch, allow_new_alleles=allow_new_alleles,
                                          thresholds=thresholds)
            _refuse_if_bad(current, batch, batch_id, ledger)
        work = _Work(samples_before=schema.num_samples(group))
        work.ids_before_digest = _digest(group["sample_id"][...])
        if new_alleles:
            widen_store(group, batch.group, new_alleles)
        write_samples(group, batch, work, progress=progress, icechunk=parent is not None,
                      cluster=cluster)
        ledger.batches.append(
            BatchRecord(batch_id, work.samples_before, work.samples_before + batch.num_samples,
                        now(), parent)
        )
        ledger.stale_info_fields = sorted(f for f in SAMPLE_DERIVED_INFO if f in group)
        note_fast_columns(ledger, work.fast_columns)
        write_ledger(group, ledger)
        return work

    def audit(after, work: _Work):
        expected = work.samples_before + batch.num_samples
        for name, array in schema.sample_arrays(after).items():
            got = array.shape[schema.sample_axis(array)]
            if got != expected:
                raise AuditError(f"audit: {name} has {got} samples after the append, expected {expected}")
        ids = schema.strings(after["sample_id"][...])
        if _digest(ids[: work.samples_before]) != work.ids_before_digest:
            raise AuditError("audit: the store's existing sample ids changed during the append")
        if not np.array_equal(ids[work.samples_before :], batch_ids):
            raise AuditError("audit: the appended sample ids differ from the batch's")
        for new in new_alleles:
            got, want = (schema.strings(g["variant_allele"][new.variant]) for g in (after, batch.group))
            if list(got[got != ""]) != list(want[want != ""]):
                raise AuditError(f"audit: the alleles at {new.site} differ from the batch's")

    message = f"append batch {batch_id}: {batch.num_samples} samples"
    metadata = {"operation": "append", "batch_id": batch_id, "num_samples": batch.num_samples}
    if new_alleles:
        metadata["new_alleles"] = sum(len(n.alleles) for n in new_alleles)
        message += f", {metadata['new_alleles']} new alleles"
    with connect(dask_scheduler) as cluster:
        done = commit(store, operation, message=message, audit=audit, metadata=metadata)
        ran = cluster.take_work() if cluster is not None else None
    work: _Work = done.result
    return AppendResult(
        batch_id=batch_id,
        snapshot_id=done.snapshot_id,
        samples_before=work.samples_before,
        samples_after=work.samples_before + batch.num_samples,
        chunks_copied=work.chunks_copied,
        chunks_reencoded=work.chunks_reencoded,
        bytes_copied=work.bytes_copied,
        fast_path=report.fast_path,
        seconds=time.perf_counter() - t0,
        findings=report.findings,
        attempts=done.attempts,
        cluster=ran,
    )


def _refuse_if_bad(report: CompatibilityReport, batch: Batch, batch_id: str, ledger) -> None:
    if batch_id in ledger.batch_ids():
        raise IncompatibleBatchError(f"batch {batch_id} is already in the store", report)
    if not report.ok:
        raise IncompatibleBatchError(refusal(batch.name, report.errors), report)


def _digest(values) -> str:
    import hashlib

    h = hashlib.sha256()
    for v in schema.strings(values):
        h.update(v.encode() + b"\0")
    return h.hexdigest()


def write_samples(group, batch: Batch, work: _Work, *, progress: bool, icechunk: bool,
                  cluster: Cluster | None = None) -> None:
    """Grow every sample array by the batch and fill the new columns."""
    n0 = work.samples_before
    n1 = n0 + batch.num_samples
    targets = schema.sample_arrays(group)
    sources = schema.sample_arrays(batch.group)
    plans = []
    for name, array in targets.items():
        axis = schema.sample_axis(array)
        shape = list(array.shape)
        shape[axis] = n1
        if icechunk:  # Icechunk refuses chunks outside an array's shape: grow first.
            array.resize(tuple(shape))
            writable = array
        else:  # plain Zarr: write chunks first, the array's metadata last.
            writable = _shadow(array, tuple(shape))
        plans.append((name, array, writable, sources[name], axis, tuple(shape)))
    total = sum(_count_units(w, axis, n0, n1) for _, _, w, _, axis, _ in plans)
    bar = _progress(total, progress)
    try:
        blocks, copies = [], []
        for name, _, writable, source, axis, _ in plans:
            more_blocks, more_copies, fast = _fill_array(name, writable, source, axis, n0, n1,
                                                         batch.sample_offset)
            blocks += more_blocks
            copies += more_copies
            work.fast_columns |= fast
        # one pass over every array's chunks keeps the disk busy end to end
        reencoded, copied = run_work(blocks, copies, cluster=cluster,
                                     on_done=bar.update if bar is not None else None)
        work.chunks_reencoded += reencoded
        work.bytes_copied += copied
        work.chunks_copied += len(copies)
        if not icechunk:
            for _, array, _, _, _, shape in plans:
                array.resize(shape)
    finally:
        if bar is not None:
            bar.close()


def _shadow(array, shape):
    """The same array with a larger shape, whose metadata is not written until ``resize``."""
    return seen_as(array, array.metadata.update_shape(shape))


def _progress(total, enabled):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="chunk", desc="append")


def _count_units(array, axis, n0, n1) -> int:
    s = array.chunks[axis]
    cols = (n1 - 1) // s - n0 // s + 1
    other = 1
    for i, (size, chunk) in enumerate(zip(array.shape, array.chunks, strict=True)):
        if i != axis:
            other *= -(-size // chunk)
    return cols * other


def _fill_array(name, dst, src, axis, n0, n1, offset) -> tuple[list[Block], list[ChunkCopy], set[int]]:
    """The blocks to re-encode and the chunks to copy that fill samples ``n0:n1`` of ``dst``, and
    the store columns re-encoded (at the fast level)."""
    s = dst.chunks[axis]
    c0, r = divmod(n0, s)
    copyable = (
        offset == r
        and src.chunks == dst.chunks[: len(src.chunks)]
        and schema.encoding_signature(src) == schema.encoding_signature(dst)
    )
    last_col = (n1 - 1) // s
    fast, lowered = fast_level(dst), writes_faster(dst)  # not lowered: the store's own level
    if not copyable:
        blocks = _reencode_blocks(fast, src, axis, n0, n1, n0, offset)
        return blocks, [], set(range(c0, last_col + 1)) if lowered else set()
    copy_cols = list(range(c0 + (r > 0), last_col + 1))
    log.debug("%s: %d columns to copy", name, len(copy_cols))
    copies = column_copies(dst, src, axis, copy_cols, c0)
    if r == 0:
        return [], copies, set()
    shared = _reencode_blocks(fast, src, axis, n0, min(n1, (c0 + 1) * s), n0, offset)
    return shared, copies, {c0} if lowered else set()


def _reencode_blocks(dst, src, axis, lo, hi, n0, offset) -> list[Block]:
    """Store samples ``lo:hi`` (the batch's from ``n0`` on), decoded from ``src`` and encoded into
    ``dst``: a block per variant chunk, across every store column in the range."""
    from_samples = slice(offset + (lo - n0), offset + (hi - n0))
    rewrite = functools.partial(_reencode_into, src=src, from_samples=from_samples)
    return array_blocks(dst, axis, lo, hi, rewrite)


def _reencode_into(dst, samples, variants, *, src, from_samples) -> int:
    """One store column at a time, each of ``src``'s chunks decoded once (:class:`SourceRow`)."""
    if variants is None:
        dst[samples] = _cast(np.asarray(src[from_samples]), dst)
        return 1
    written = regrid_row(dst, samples, variants, src, from_samples.start)
    if written is not None:
        return written
    row = SourceRow(src, variants)
    shift = from_samples.start - samples.start
    trailing = tuple(dst.shape[2:])
    s = dst.chunks[1]
    lo = samples.start
    columns = 0
    while lo < samples.stop:
        hi = min(samples.stop, (lo // s + 1) * s)
        values = row.read(lo + shift, hi + shift)
        if values.shape[2:] != trailing:
            values = _fit_trailing(values, trailing, dst)
        dst[variants, lo:hi] = _cast(values, dst)
        del values
        columns += 1
        lo = hi
    return columns * trailing_chunks(dst)


def _cast(values, dst):
    if getattr(dst.dtype, "kind", "") in ("T", "O", "U"):
        return values
    target = np.dtype(dst.dtype)
    if values.dtype == target:
        return values
    if target.kind in "iu" and values.dtype.kind in "iu":
        info = np.iinfo(target)
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise InvalidInputError(f"a value of {dst.path} does not fit the store's {target}")
    return values.astype(target)


def _fit_trailing(values, trailing, dst):
    """Pad a smaller trailing dimension with the fill value (never truncates: the check refuses that)."""
    pad = [(0, 0), (0, 0)] + [(0, t - v) for t, v in zip(trailing, values.shape[2:], strict=True)]
    return np.pad(values, pad, constant_values=schema.fill_value_for(dst))
