"""A harmonised site's values from the batch records it takes: genotypes and R, A and G fields
remapped to the site's alleles, split records merged as ``bcftools norm -m+`` merges them, fields
of a fixed VCF Number copied as they are, and ``Number=.`` fields copied only where that is exact.
Anything else is refused, naming the field and the site."""

from __future__ import annotations

import dataclasses

import numpy as np

from vczstore_dagster.store import missing, schema
from vczstore_dagster.store.errors import InvalidInputError
from vczstore_dagster.store.planner import A_DIM, G_DIM, R_DIM, num_genotypes
from vczstore_dagster.store.sites import SitePlan
from vczstore_dagster.store.widen import widen_hint


class CannotHarmonise(InvalidInputError):
    """A field's values cannot be carried to the store's site exactly."""


def _refuse(field, site, why):
    raise CannotHarmonise(f"field {field} at {site} cannot be harmonised exactly: {why}")


def genotypes(rows, plan: SitePlan, site):
    """Genotypes remapped to the output alleles; split records merged like ``norm -m+``.
    Returns the genotypes and which samples lost their phase in the merge."""
    out = None
    lost_phase = None
    for rows_j, src in zip(rows, plan.sources, strict=True):
        amap = np.asarray(src.amap)
        if np.any(rows_j >= len(amap)):
            _refuse("call_genotype", site, f"an allele index is beyond the record's {len(amap)} alleles")
        mapped = np.where(rows_j >= 0, amap[np.clip(rows_j, 0, None)], rows_j)
        if out is None:
            out = mapped.copy()
            lost_phase = np.zeros(out.shape[0], dtype=bool)
            continue
        for k2 in range(rows_j.shape[1]):
            alt = rows_j[:, k2] > 0  # never overwrite with REF; missing adds nothing
            if not alt.any():
                continue
            free = (out == -1) | (out == 0)
            slot = np.argmax(free, axis=1)
            if np.any(alt & ~free.any(axis=1)):
                _refuse("call_genotype", site, "the split records call more ALT alleles than the "
                        "sample's ploidy holds")
            rows_i = np.flatnonzero(alt)
            out[rows_i, slot[rows_i]] = mapped[rows_i, k2]
            lost_phase[rows_i[slot[rows_i] >= 1]] = True
    return out, lost_phase


def per_allele(rows, plan: SitePlan, kind: str, width: int, dtype, field, site):
    """An R (alleles), A (alt_alleles) or G (genotypes) field remapped to the output alleles."""
    missing_value, fill = missing.codes(dtype)
    n_out = len(plan.alleles)
    ns = rows[0].shape[0]
    if kind == G_DIM:
        diploid = np.zeros(ns, dtype=bool)
        for rows_j, src in zip(rows, plan.sources, strict=True):
            diploid |= missing.count(rows_j) == num_genotypes(len(src.amap))
        size = np.where(diploid, num_genotypes(n_out), n_out)
    else:
        size = np.full(ns, n_out - (kind == A_DIM))
    if np.any(size > width):
        _refuse(field, site, f"{int(size.max())} values do not fit the store's {width}")
    out = np.full((ns, width), fill, dtype=dtype)
    out[np.arange(width)[None, :] < size[:, None]] = missing_value
    for rows_j, src in zip(rows, plan.sources, strict=True):
        amap = np.asarray(src.amap)
        n_b = len(amap)
        if kind == A_DIM:
            targets = {n_b - 1: amap[1:] - 1}
        elif kind == R_DIM:
            targets = {n_b: amap}
        else:
            gmap = np.array([_gt_index(amap[a], amap[b]) for a in range(n_b) for b in range(a + 1)])
            targets = {num_genotypes(n_b): gmap, n_b: amap}
        count = missing.count(rows_j)
        for n_vals, target in targets.items():
            if kind == G_DIM:
                take = count == n_vals
                take &= diploid if n_vals == num_genotypes(n_b) and n_b > 1 else ~diploid
            else:
                take = count >= 1
            take &= ~missing.is_dot(rows_j)
            if not take.any():
                continue
            cols = min(n_vals, rows_j.shape[1])
            sub = rows_j[take][:, :cols]
            block = out[take]
            keep = np.arange(cols)[None, :] < count[take][:, None]  # up to the first fill
            block[:, target[:cols]] = np.where(keep, sub, block[:, target[:cols]])
            out[take] = block
    dots = missing.is_missing(out).sum(axis=1) == size
    out[dots] = missing.empty((1, 1, width), dtype)[0, 0]
    return out


def _gt_index(a: int, b: int) -> int:
    a, b = min(a, b), max(a, b)
    return b * (b + 1) // 2 + a


@dataclasses.dataclass(frozen=True)
class Number:
    """A field's VCF Number as conversion recorded it: the batch's own, else the store's (the
    same field); ``value`` None when neither records one (both converted elsewhere)."""

    value: str | None = None
    recorded_by: str | None = None

    @classmethod
    def of(cls, batch_array, store_array) -> Number:
        for by, array in (("batch", batch_array), ("store", store_array)):
            value = schema.vcf_number(array)
            if value is not None:
                return cls(value, by)
        return cls()

    @property
    def fixed(self) -> bool:
        """Number=N: values that do not depend on the alleles."""
        return self.value is not None and self.value.isdigit()

    def per_allele_unknown(self, width: int | None) -> bool:
        """Values whose relation to the alleles is not declared: ``Number=.``, or, with no Number
        recorded, a trailing dimension that is not R, A or G (taken as ``Number=.``)."""
        if self.value is None:
            return width is not None
        return not self.fixed

    def why(self) -> str:
        if self.value is None:
            return ("the batch and the store record no VCF Number for it (neither was converted "
                    "by vczstore), so it is taken as Number=. (no declared per-allele layout)")
        if self.value == ".":
            return f"it is Number=. in the {self.recorded_by}'s header (no declared per-allele layout)"
        return (f"it is Number={self.value} in the {self.recorded_by}'s header but the store holds "
                "it with no per-allele dimension")


def copied(rows, plan: SitePlan, field, site, number: Number, width: int | None):
    """A field with no per-allele dimension: the records of a split site must agree. A fixed
    Number's values are copied as they are; a field whose values may depend on the alleles in an
    undeclared way (``Number=.``) only when the allele indexes are unchanged or when it holds no
    values at the site."""
    first = rows[0]
    for other in rows[1:]:
        if not _equal(first, other):
            _refuse(field, site, f"the batch's {len(rows)} records of this site "
                    f"({'; '.join(plan.describe(s) for s in plan.sources)}) disagree")
    if number.per_allele_unknown(width) and len(rows) == 1 and not plan.in_order():
        if not (missing.is_missing(first) | missing.is_fill(first)).all():
            _refuse(field, site, f"{number.why()}, and the batch lists the alleles as "
                    f"{plan.describe(plan.sources[0])}, the store as "
                    f"{','.join(plan.alleles[: plan.store_alleles])}")
    return first


def _equal(a, b) -> bool:
    if a.dtype == np.float32:
        return np.array_equal(a.view(np.int32), b.view(np.int32))
    return np.array_equal(a, b)


def cast(values, dtype, name):
    """Values in the store's dtype; an integer that does not fit is refused, naming the field."""
    if missing.is_string(dtype) or values.dtype == dtype:
        return values
    target = np.dtype(dtype)
    if target.kind in "iu" and values.dtype.kind in "iu" and values.size:
        info = np.iinfo(target)
        lo, hi = values.min(), values.max()
        if lo < info.min or hi > info.max:
            raise InvalidInputError(f"field {name}: a value does not fit the store's {target}; "
                                    + widen_hint(name, min(lo, info.min), max(hi, info.max)))
    return values.astype(target)
