"""New ALT alleles at store sites: widening an array (a harmonised batch's copy, or the store in
the append's commit) so that each site's rows make room for them."""

from __future__ import annotations

import itertools

import numpy as np

from vczstore_dagster.store import missing, schema
from vczstore_dagster.store.plan import NewAllele
from vczstore_dagster.store.planner import A_DIM, ALLELE_DIMS, G_DIM, num_genotypes


def dim_kind(array) -> str | None:
    """The first trailing dimension of an array (after variants, and samples if it has them)."""
    trailing = schema.dims(array)[2:] if schema.sample_axis(array) == 1 else schema.dims(array)[1:]
    return trailing[0] if trailing else None


def add_new_alleles(array, new_alleles: list[NewAllele], samples: int) -> None:
    """Give existing rows the new alleles: ``variant_allele`` gets them; an R, A or G field gets
    missing values in their slots (a "." row stays "."). ``samples``: how many call_* columns."""
    kind = dim_kind(array)
    if kind not in ALLELE_DIMS or not new_alleles:
        return
    name = array.path.rsplit("/", 1)[-1]
    missing_value = missing.codes(array.dtype)[0]
    for new in new_alleles:
        v = new.variant
        if name == "variant_allele":
            row = np.asarray(array[v]).copy()
            row[new.existing : new.existing + len(new.alleles)] = new.alleles
            array[v] = row
        elif schema.sample_axis(array) is None:
            array[v] = _open_slots(np.asarray(array[v])[None], new, kind, missing_value)[0]
        else:
            step = array.chunks[1]
            for s0 in range(0, samples, step):
                rows = np.asarray(array[v, s0 : s0 + step])
                array[v, s0 : s0 + step] = _open_slots(rows, new, kind, missing_value)


def _open_slots(rows, new: NewAllele, kind, missing_value):
    """Missing values in the new alleles' slots of every complete row (a "." row stays ".")."""
    n, add = new.existing, len(new.alleles)
    count = missing.count(rows)
    rows = rows.copy()
    if kind == G_DIM:  # diploid rows hold n(n+1)/2 values, haploid rows n
        spans = [(num_genotypes(n), num_genotypes(n + add)), (n, n + add)]
    else:
        k = n - (kind == A_DIM)
        spans = [(k, k + add)]
    for lo, hi in spans:
        sel = (count == lo) & ~missing.is_dot(rows)
        rows[sel, lo : min(hi, rows.shape[1])] = missing_value
        if kind == G_DIM and n == 1:
            break
    return rows


def widen_store(group, batch_group, new_alleles: list[NewAllele]) -> None:
    """In a writable store group, before the batch's samples are written: make room for the
    batch's new alleles (grow the alleles, alt_alleles and genotypes dimensions to the batch's;
    the new slots get the fill value) and add them, existing samples getting missing values."""
    for name, array in list(group.arrays()):
        if name not in batch_group or not set(schema.dims(array)) & set(ALLELE_DIMS):
            continue
        old = array.shape
        target = tuple(max(size, other) if d in ALLELE_DIMS else size
                       for d, size, other in zip(schema.dims(array), old,
                                                 batch_group[name].shape, strict=True))
        if target != old:
            array.resize(target)
            _fill_new_slots(array, old[-1])
        samples = array.shape[1] if schema.sample_axis(array) == 1 else 0
        add_new_alleles(array, new_alleles, samples)


def _fill_new_slots(array, old_width: int) -> None:
    """Write the fill value into the slots a widened trailing dimension added, block by block."""
    fill = missing.codes(array.dtype)[1]
    lead = [range(0, size, chunk) for size, chunk in zip(array.shape[:-1], array.chunks[:-1],
                                                          strict=True)]
    for starts in itertools.product(*lead):
        sel = tuple(slice(s, min(s + c, size)) for s, c, size in
                    zip(starts, array.chunks, array.shape, strict=False))
        shape = tuple(x.stop - x.start for x in sel) + (array.shape[-1] - old_width,)
        array[sel + (slice(old_width, None),)] = np.full(shape, fill, dtype=array.dtype)
