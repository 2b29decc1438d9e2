"""Widen an integer FORMAT field's type, in one commit, so that batches with larger values fit.

bio2zarr gives each field the smallest integer type its file needs, and the store keeps the first
batch's: a store made from shallow data has ``call_DP`` as int8, and a later batch with depths
over 127 cannot be converted into its schema. Widening rewrites that one array block by block
with the wider type; batches converted ``--like`` the store afterwards use it and append on the
fast path again. Integers only: the VCF Zarr missing (-1) and fill (-2) values are the same in
every width, while a float's missing and fill NaN patterns would not survive a conversion.

Icechunk only: the new array is written under the field's own name in the commit's session while
the blocks are read from the snapshot the commit starts from, so readers see the old array or the
new one, never a mix. A plain Zarr directory has no snapshot to read from.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from vczstore_dagster.store import schema
from vczstore_dagster.store.blocks import (
    column_blocks,
    read_by_source_chunk,
    reencode_blocks,
    run_blocks,
)
from vczstore_dagster.store.cluster import Cluster, ClusterWork, connect, run_work
from vczstore_dagster.store.errors import AuditError, InvalidInputError
from vczstore_dagster.store.transaction import commit


@dataclasses.dataclass
class WidenResult:
    field: str
    old_dtype: str
    new_dtype: str
    chunks_rewritten: int
    snapshot_id: str | None
    seconds: float
    cluster: ClusterWork | None = None  # what ran on a Dask cluster


def widen_field(store, field: str, dtype: str, *, progress: bool = False,
                dask_scheduler: str | Cluster | None = None) -> WidenResult:
    """Rewrite ``field`` with integer type ``dtype``, which must hold every value of its own type;
    refuses anything else with the store untouched. ``dask_scheduler``: re-encode on that Dask
    cluster (an address, or ``local``)."""
    t0 = time.perf_counter()
    if store.backend != "icechunk":
        raise InvalidInputError(
            f"{store.url}: widening a field needs an Icechunk store (a plain Zarr store would be "
            "half rewritten while it runs); rebuild the store as Icechunk to widen it")
    head = store.readonly_group()
    old = _check(head, field, dtype)
    new = np.dtype(dtype)

    def operation(group, parent):
        source = store.readonly_group(at=parent)[field]
        _check(group, field, dtype)
        del group[field]
        target = schema.create_like(group, field, source, dtype=new)
        chunks, _ = run_work(reencode_blocks(source, target), cluster=cluster,
                             progress="widen" if progress else None)
        return source, chunks

    def audit(after, done):
        source, _ = done
        array = after[field]
        if np.dtype(array.dtype) != new or array.shape != source.shape:
            raise AuditError(f"audit: {field} is {array.dtype} {array.shape} after widening, "
                             f"expected {new} {source.shape}")
        _same_values(field, source, array)

    with connect(dask_scheduler) as cluster:
        done = commit(store, operation, message=f"widen {field}: {old} to {new}", audit=audit,
                      metadata={"operation": "widen", "field": field, "from": str(old),
                                "to": str(new)})
        ran = cluster.take_work() if cluster is not None else None
    return WidenResult(field, str(old), str(new), done.result[1], done.snapshot_id,
                       time.perf_counter() - t0, ran)


def _same_values(field: str, source, widened) -> None:
    """The audit reads the widened field back: every value as it was (missing and fill too)."""

    def compare(samples, variants):
        if not np.array_equal(read_by_source_chunk(source, variants, samples),
                              read_by_source_chunk(widened, variants, samples)):
            raise AuditError(f"audit: {field} read back after widening differs from its values "
                             f"before, at variants {variants.start}-{variants.stop - 1} and "
                             f"samples {samples.start}-{samples.stop - 1}")
        return 0

    step, n = widened.chunks[1], widened.shape[1]
    run_blocks([b for lo in range(0, n, step)
                for b in column_blocks(widened, 1, lo, min(lo + step, n), compare)])


def widens(old, new) -> bool:
    """Whether ``widen`` takes integer type ``old`` to ``new``: every value of ``old`` fits."""
    old, new = np.dtype(old), np.dtype(new)
    return old.kind in "iu" and new.kind in "iu" and bool(np.can_cast(old, new, casting="safe"))


def widen_hint(field: str, lo, hi) -> str:
    """What to tell an operator whose batch holds values ``lo..hi`` of ``field`` that the store's
    type cannot: the command that makes room for them."""
    for dtype in ("int16", "int32", "int64"):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return f"`vczstore widen STORE {field} {dtype}` makes room for them"
    return "no integer type holds them"


def _check(group, field: str, dtype: str) -> np.dtype:
    """The field's current dtype, once ``dtype`` is known to widen it."""
    fields = schema.call_fields(group)
    if field not in fields:
        raise InvalidInputError(f"field {field}: not a FORMAT field of the store "
                                f"(it has {', '.join(sorted(fields)) or 'none'})")
    old = np.dtype(fields[field].dtype)
    try:
        new = np.dtype(dtype)
    except TypeError:
        raise InvalidInputError(f"type {dtype!r}: not a type name (int16, int32, ...)") from None
    if old.kind not in "iu":
        raise InvalidInputError(f"field {field} is {old}: only integer fields can be widened")
    if new.kind not in "iu":
        raise InvalidInputError(f"type {dtype}: a field widens to an integer type (int16, int32, ...)")
    if new == old:
        raise InvalidInputError(f"field {field} is already {old}")
    if not widens(old, new):
        raise InvalidInputError(f"field {field} is {old}: {new} would not hold all its values "
                                "(widening only)")
    return old
