"""Harmonise a batch's variants to the store's variant set.

The store's variant set is fixed; a batch from another pipeline run may lack some of its variants,
carry extra ones, list a site's ALT alleles in another order, split a multi-allelic site into
several records, or bring a new ALT allele. The result has exactly the store's variant arrays and
the batch's sample arrays aligned to them, as ``bcftools norm -m+`` (of split records) followed by
``bcftools merge -m none`` with the store would give:

- a store site the batch lacks: missing genotypes and missing values in every ``call_*`` field
  (a haploid sample keeps the fill value in its unused ploidy slot);
- a batch record no store site takes: dropped and counted;
- a record is taken by the store site at the same contig, position and REF whose ALT set is the
  same, or else contains it, or else overlaps it (as ``merge -m none`` does); its genotypes and its
  R (alleles), A (alt_alleles) and G (genotypes, diploid order) fields are remapped. A field with
  no declared per-allele layout (``Number=.``) that holds values at a remapped site cannot be
  remapped exactly: refused, naming the field and the site;
- several records at one position and REF that no store site takes one by one are merged first;
- ALT alleles the store's site does not have are *new alleles*: recorded, appended after the
  store's alleles; ``append`` refuses them unless asked to widen the store in the same commit.

Everything works block by block (one store variant chunk × one sample chunk), never a whole array.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import pathlib
import shutil
import subprocess
import warnings

import numpy as np

from vczstore_dagster.store import schema
from vczstore_dagster.store.blocks import run_blocks
from vczstore_dagster.store.errors import InvalidInputError
from vczstore_dagster.store.widen import widen_hint

HARMONISATION_ATTR = "vczstore_harmonisation"
R_DIM, A_DIM, G_DIM, PLOIDY_DIM = "alleles", "alt_alleles", "genotypes", "ploidy"
ALLELE_DIMS = (R_DIM, A_DIM, G_DIM)
GENOTYPE_FIELDS = ("call_genotype", "call_genotype_mask", "call_genotype_phased")
EXAMPLES = 5


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


def _plain(value):
    """JSON-ready: numpy scalars become Python numbers (zarr attributes are JSON)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclasses.dataclass
class NewAllele:
    """ALT alleles a batch brings to a store site (appended after the site's alleles)."""

    variant: int
    site: str
    alleles: list[str]
    existing: int  # the store's alleles at the site (REF included)


@dataclasses.dataclass
class HarmonisationReport:
    missing_filled: int = 0  # store sites the batch lacks
    dropped: int = 0  # batch records no store site takes
    remapped: int = 0  # store sites whose alleles the batch lists in another order or subset
    split_merged: int = 0  # store sites assembled from several batch records
    new_alleles: list[NewAllele] = dataclasses.field(default_factory=list)
    examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    harmonised: bool = False  # False when the batch already had the store's variants
    widths: dict[str, int] = dataclasses.field(default_factory=dict)  # widened dimensions

    @property
    def num_new_alleles(self) -> int:
        return sum(len(n.alleles) for n in self.new_alleles)

    def counts(self) -> dict[str, int]:
        return {"missing_filled": self.missing_filled, "dropped": self.dropped,
                "remapped": self.remapped, "split_merged": self.split_merged,
                "new_alleles": self.num_new_alleles}

    @property
    def changed(self) -> bool:
        return any(self.counts().values())

    def summary(self) -> str:
        labels = {"missing_filled": "store variants missing from the batch (filled with missing)",
                  "dropped": "batch records not in the store (dropped)",
                  "remapped": "sites with alleles in another order (remapped)",
                  "split_merged": "split multi-allelic sites (merged)",
                  "new_alleles": "new ALT alleles"}
        parts = [f"{n} {labels[k]}" for k, n in self.counts().items() if n]
        return "; ".join(parts) if parts else "the batch has the store's variants"

    def _note(self, kind: str, site: str) -> None:
        shown = self.examples.setdefault(kind, [])
        if len(shown) < EXAMPLES:
            shown.append(site)

    def to_attrs(self) -> dict:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_attrs(cls, raw) -> HarmonisationReport:
        raw = dict(raw)
        raw["new_alleles"] = [NewAllele(**n) for n in raw.get("new_alleles", [])]
        return cls(**raw)


def report_of(group) -> HarmonisationReport | None:
    """The report a harmonised batch carries in its root attributes (None: not harmonised)."""
    raw = group.attrs.get(HARMONISATION_ATTR)
    return HarmonisationReport.from_attrs(raw) if raw else None


# ---------------------------------------------------------------------------------------------
# Matching the records at one position
# ---------------------------------------------------------------------------------------------


def match_position(store_sites, batch_records) -> dict[int, list[int]]:
    """Which batch records each store site at one position takes: ``{store k: [batch j, ...]}``.

    Both arguments are lists of allele tuples (REF first). A store site takes the record with the
    same REF and ALT set; else the records left at one REF are merged (a split multi-allelic
    site) and taken as one, else one by one, by the first store site whose ALTs contain theirs,
    else by the first whose ALTs overlap theirs (new alleles).
    """
    pairs: dict[int, list[int]] = {}
    free_s = list(range(len(store_sites)))
    free_b = []
    for j, rec in enumerate(batch_records):
        k = next((k for k in free_s if _same(store_sites[k], rec)), None)
        if k is None:
            free_b.append(j)
        else:
            pairs[k] = [j]
            free_s.remove(k)
    by_ref: dict[str, list[int]] = {}
    for j in free_b:
        by_ref.setdefault(batch_records[j][0], []).append(j)
    for js in by_ref.values():
        if len(js) > 1:  # split records: merged when a store site takes them together
            k = _partner(store_sites, free_s, merged_alleles([batch_records[j] for j in js]))
            if k is not None:
                pairs[k] = js
                free_s.remove(k)
                continue
        for j in js:
            k = _partner(store_sites, free_s, batch_records[j])
            if k is not None:
                pairs[k] = [j]
                free_s.remove(k)
    return pairs


def _same(a, b) -> bool:
    return a[0] == b[0] and set(a[1:]) == set(b[1:])


def _partner(store_sites, free_s, alleles):
    alts = set(alleles[1:])
    same_ref = [k for k in free_s if store_sites[k][0] == alleles[0]]
    for k in same_ref:
        if alts <= set(store_sites[k][1:]):
            return k
    for k in same_ref:
        if alts & set(store_sites[k][1:]):
            return k
    return None


def merged_alleles(records) -> tuple[str, ...]:
    """REF and the union of the ALTs in order of appearance (``bcftools norm -m+``)."""
    out = [records[0][0]]
    for rec in records:
        out.extend(a for a in rec[1:] if a not in out)
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class Source:
    index: int  # batch variant index
    amap: tuple[int, ...]  # batch allele k → output allele amap[k]


@dataclasses.dataclass(frozen=True)
class SitePlan:
    alleles: tuple[str, ...]  # the output site's alleles: the store's, then any new ones
    store_alleles: int  # how many of them the store has
    sources: tuple[Source, ...] = ()
    ploidy_ref: int = -1  # batch record whose ploidy a missing-filled site takes

    def identity(self) -> bool:
        if len(self.sources) != 1:
            return False
        amap = self.sources[0].amap
        return len(amap) == len(self.alleles) and amap == tuple(range(len(amap)))

    def in_order(self) -> bool:
        """Every source keeps its allele indexes (only alleles are added)."""
        return all(s.amap == tuple(range(len(s.amap))) for s in self.sources)


# ---------------------------------------------------------------------------------------------
# Planning: a forward pass over both variant sets, one store block at a time
# ---------------------------------------------------------------------------------------------


def _allele_rows(values) -> list[tuple[str, ...]]:
    return [tuple(a for a in row if a) for row in schema.strings(values)]


class _Planner:
    """Plans the store's sites block by block; ``report`` collects the counts as it goes."""

    def __init__(self, store, batch, report: HarmonisationReport, block: int | None = None):
        self.s, self.b, self.report = store, batch, report
        self.n = schema.num_variants(store)
        self.block = block or schema.variants_chunk_size(store)
        self.contigs = list(schema.strings(store["contig_id"][...]))
        b_contigs = list(schema.strings(batch["contig_id"][...]))
        self.ranges = _contig_ranges(batch)
        by_name = {name: i for i, name in enumerate(b_contigs)}
        self.batch_contig = {i: by_name[c] for i, c in enumerate(self.contigs) if c in by_name}
        self.cursor = {bc: start for bc, (start, _) in self.ranges.items()}
        self.last_pos = {}
        self.b_contigs = b_contigs

    def blocks(self):
        """Yield ``(start, [SitePlan, ...])``, in store order, never splitting a position."""
        v0 = 0
        while v0 < self.n:
            v1 = self._block_end(v0)
            yield v0, self._plan(v0, v1)
            v0 = v1
        for bc, (_, stop) in self.ranges.items():  # batch records after the store's last site
            left = stop - self.cursor[bc]
            if left:
                self.report.dropped += left
                pos = int(self.b["variant_position"][self.cursor[bc]])
                self.report._note("dropped", f"{self.b_contigs[bc]}:{pos}")

    def _block_end(self, v0: int) -> int:
        v1 = min(self.n, v0 + self.block)
        while v1 < self.n:
            c = np.asarray(self.s["variant_contig"][v1 - 1 : v1 + self.block])
            p = np.asarray(self.s["variant_position"][v1 - 1 : v1 + self.block])
            same = (c[1:] == c[0]) & (p[1:] == p[0])
            if not same.all():
                return v1 + int(np.argmin(same))
            v1 = min(self.n, v1 + len(same))
        return v1

    def _plan(self, v0: int, v1: int) -> list[SitePlan]:
        contig = np.asarray(self.s["variant_contig"][v0:v1])
        pos = np.asarray(self.s["variant_position"][v0:v1])
        alleles = _allele_rows(self.s["variant_allele"][v0:v1])
        plans: list[SitePlan | None] = [None] * (v1 - v0)
        runs = np.flatnonzero(np.diff(contig)) + 1
        for a, b in zip([0, *runs], [*runs, v1 - v0], strict=True):
            self._plan_contig(int(contig[a]), pos[a:b], alleles[a:b], plans, a, v0)
        return plans

    def _plan_contig(self, c, pos, alleles, plans, offset, v0) -> None:
        bc = self.batch_contig.get(c)
        if bc is None or bc not in self.ranges:
            for i, al in enumerate(alleles):
                plans[offset + i] = SitePlan(al, len(al))
                self._missing(c, pos[i])
            return
        start, stop = self.ranges[bc]
        cur = self.cursor[bc]
        end = self._advance(cur, stop, int(pos[-1]))
        bpos = np.asarray(self.b["variant_position"][cur:end]).astype(np.int64)
        if len(bpos) and (np.any(np.diff(bpos) < 0) or bpos[0] < self.last_pos.get(bc, -1)):
            raise InvalidInputError(f"batch: variants of contig {self.contigs[c]} are not sorted "
                                    "by position; sort the VCF (bcftools sort) and convert again")
        if len(bpos):
            self.last_pos[bc] = int(bpos[-1])
        balleles = _allele_rows(self.b["variant_allele"][cur:end]) if end > cur else []
        self.cursor[bc] = end
        used = np.zeros(end - cur, dtype=bool)
        if len(bpos) == len(pos) and np.array_equal(bpos, pos) and balleles == alleles:
            for i, al in enumerate(alleles):  # the common case: the same records
                plans[offset + i] = SitePlan(al, len(al), (Source(cur + i, tuple(range(len(al)))),))
            return
        by_pos: dict[int, list[int]] = {}
        for j, p in enumerate(bpos):
            by_pos.setdefault(int(p), []).append(j)
        i = 0
        while i < len(pos):
            k = i
            while k < len(pos) and pos[k] == pos[i]:
                k += 1
            js = by_pos.get(int(pos[i]), [])
            pairs = match_position(alleles[i:k], [balleles[j] for j in js])
            for s in range(i, k):
                taken = [js[j] for j in pairs.get(s - i, [])]
                used[taken] = True
                plans[offset + s] = self._site(c, int(pos[s]), alleles[s], taken, balleles, cur,
                                               v0 + offset + s)
                if not taken:
                    plans[offset + s] = dataclasses.replace(
                        plans[offset + s], ploidy_ref=self._ploidy_ref(bpos, pos[s], cur, start, stop))
            i = k
        for j in np.flatnonzero(~used):
            self.report.dropped += 1
            self.report._note("dropped", f"{self.contigs[c]}:{int(bpos[j])}")

    def _advance(self, cur: int, stop: int, p_hi: int) -> int:
        """The first batch index at or after ``cur`` whose position is beyond ``p_hi``."""
        step = schema.variants_chunk_size(self.b)
        j = cur
        while j < stop:
            chunk = np.asarray(self.b["variant_position"][j : min(stop, j + step)])
            k = int(np.searchsorted(chunk, p_hi, side="right"))
            if k < len(chunk):
                return j + k
            j += len(chunk)
        return stop

    @staticmethod
    def _ploidy_ref(bpos, p, cur, start, stop) -> int:
        k = int(np.searchsorted(bpos, p, side="right")) - 1
        if k >= 0:
            return cur + k
        if cur > start:
            return cur - 1
        return start if stop > start else -1

    def _missing(self, c, p) -> None:
        self.report.missing_filled += 1
        self.report._note("missing_filled", f"{self.contigs[c]}:{int(p)}")

    def _site(self, c, p, store_alleles, taken, balleles, cur, variant) -> SitePlan:
        if not taken:
            self._missing(c, p)
            return SitePlan(store_alleles, len(store_alleles))
        records = [balleles[j] for j in taken]  # ``taken``: indexes into the window at ``cur``
        merged = merged_alleles([store_alleles, *records])
        sources = tuple(Source(cur + j, tuple(merged.index(a) for a in rec))
                        for j, rec in zip(taken, records, strict=True))
        plan = SitePlan(merged, len(store_alleles), sources)
        site = f"{self.contigs[c]}:{p}"
        if len(merged) > len(store_alleles):
            self.report.new_alleles.append(
                NewAllele(int(variant), site, [str(a) for a in merged[len(store_alleles):]],
                          int(len(store_alleles))))
        if len(sources) > 1:
            self.report.split_merged += 1
            self.report._note("split_merged", site)
        elif not plan.identity() and len(merged) == len(store_alleles):
            self.report.remapped += 1
            self.report._note("remapped", site)
        elif sources[0].index != variant:
            self.report.harmonised = True  # same records, other places
        return plan


def _contig_ranges(batch) -> dict[int, tuple[int, int]]:
    """Batch contig index → (first, stop) variant index; each contig's records must be together."""
    ranges: dict[int, list[int]] = {}
    n = schema.num_variants(batch)
    step = schema.variants_chunk_size(batch) * 8
    last = None
    for v0 in range(0, n, step):
        c = np.asarray(batch["variant_contig"][v0 : v0 + step]).astype(np.int64)
        edges = np.flatnonzero(np.diff(c)) + 1
        for a, b in zip([0, *edges], [*edges, len(c)], strict=True):
            ci = int(c[a])
            if ci in ranges and ci != last:
                names = schema.strings(batch["contig_id"][...])
                raise InvalidInputError(f"batch: the records of contig {names[ci]} are not together;"
                                        " sort the VCF (bcftools sort) and convert again")
            ranges.setdefault(ci, [v0 + a, v0 + b])[1] = v0 + b
            last = ci
    return {c: (a, b) for c, (a, b) in ranges.items()}


def _plans_by_chunk(store, batch, report):
    """``(v0, v1, plans)`` for each store variant chunk."""
    planner = _Planner(store, batch, report)
    chunk = schema.variants_chunk_size(store)
    blocks = planner.blocks()
    buf: list[SitePlan] = []
    buf_start = 0
    for v0 in range(0, planner.n, chunk):
        v1 = min(planner.n, v0 + chunk)
        while buf_start + len(buf) < v1:
            _, plans = next(blocks)
            buf.extend(plans)
        yield v0, v1, buf[v0 - buf_start : v1 - buf_start]
        buf = buf[v1 - buf_start :]
        buf_start = v1
    for _ in blocks:  # count what is left in the batch
        pass


def plan(store, batch) -> HarmonisationReport:
    """What harmonising ``batch`` (a zarr group) to ``store`` (a zarr group) would do; reads only
    the variant arrays."""
    report = HarmonisationReport()
    width = store["variant_allele"].shape[1]
    for _, _, plans in _plans_by_chunk(store, batch, report):
        for p in plans:
            width = max(width, len(p.alleles))
    report.harmonised = report.harmonised or report.changed or (
        schema.num_variants(store) != schema.num_variants(batch))
    if width > store["variant_allele"].shape[1]:
        report.widths = _widths(store, width)
    return report


def _widths(store, n_alleles: int) -> dict[str, int]:
    ploidy = store["call_genotype"].shape[2] if "call_genotype" in store else 2
    return {R_DIM: n_alleles, A_DIM: n_alleles - 1, G_DIM: _num_genotypes(n_alleles, ploidy)}


def _num_genotypes(n_alleles: int, ploidy: int = 2) -> int:
    from math import comb

    return comb(n_alleles + ploidy - 1, ploidy)


# ---------------------------------------------------------------------------------------------
# Missing and fill values
# ---------------------------------------------------------------------------------------------


def _is_string(dtype) -> bool:
    return getattr(dtype, "kind", "") in ("T", "O", "U", "S")


def _codes(dtype):
    """(missing, fill) of the VCF Zarr spec for a dtype."""
    if _is_string(dtype):
        return ".", ""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return False, False
    if dtype.kind in "iu":
        return -1, -2
    bits = np.array([0x7F800001, 0x7F800002], dtype=np.int32).view(np.float32).astype(dtype)
    return bits[0], bits[1]


def _is_code(values, code_index: int):
    values = np.asarray(values)
    if _is_string(values.dtype):
        return values == (".", "")[code_index]
    if values.dtype.kind == "b":
        return np.zeros(values.shape, dtype=bool)
    if values.dtype.kind in "iu":
        return values == (-1, -2)[code_index]
    if values.dtype == np.float32:
        return values.view(np.int32) == (0x7F800001, 0x7F800002)[code_index]
    return np.isnan(values) if code_index == 0 else np.zeros(values.shape, dtype=bool)


def _is_missing(values):
    return _is_code(values, 0)


def _is_fill(values):
    return _is_code(values, 1)


def _empty(shape, dtype, dot: bool = True):
    """An array of "." values: missing first, then fill along the last (trailing) axis."""
    missing, fill = _codes(dtype)
    out = np.full(shape, fill, dtype=dtype)
    if dot and len(shape) > 2:
        out[..., 0] = missing
    elif dot:
        out[...] = missing
    return out


def _fit(values, width: int, fill):
    """Values padded with fill (or cut: only fill is cut) to ``width`` along the last axis."""
    have = values.shape[-1]
    if have == width:
        return values
    if have > width:
        return values[..., :width]
    pad = [(0, 0)] * (values.ndim - 1) + [(0, width - have)]
    return np.pad(values, pad, constant_values=fill)


def _dim_kind(array) -> str | None:
    trailing = schema.dims(array)[2:] if schema.sample_axis(array) == 1 else schema.dims(array)[1:]
    return trailing[0] if trailing else None


# ---------------------------------------------------------------------------------------------
# Values at one output site from its batch records
# ---------------------------------------------------------------------------------------------


class CannotHarmonise(InvalidInputError):
    """A field's values cannot be carried to the store's site exactly."""


def _refuse(field, site, why):
    raise CannotHarmonise(f"field {field} at {site} cannot be harmonised exactly: {why}")


def _genotypes(rows, plan: SitePlan, site):
    """Genotypes remapped to the output alleles; split records merged like ``norm -m+``."""
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


def _per_allele(rows, plan: SitePlan, kind: str, width: int, dtype, field, site):
    """An R (alleles), A (alt_alleles) or G (genotypes) field remapped to the output alleles."""
    missing, fill = _codes(dtype)
    n_out = len(plan.alleles)
    ns = rows[0].shape[0]
    if kind == G_DIM:
        diploid = np.zeros(ns, dtype=bool)
        for rows_j, src in zip(rows, plan.sources, strict=True):
            diploid |= _count(rows_j) == _num_genotypes(len(src.amap))
        size = np.where(diploid, _num_genotypes(n_out), n_out)
    else:
        size = np.full(ns, n_out - (kind == A_DIM))
    if np.any(size > width):
        _refuse(field, site, f"{int(size.max())} values do not fit the store's {width}")
    out = np.full((ns, width), fill, dtype=dtype)
    out[np.arange(width)[None, :] < size[:, None]] = missing
    for rows_j, src in zip(rows, plan.sources, strict=True):
        amap = np.asarray(src.amap)
        n_b = len(amap)
        if kind == A_DIM:
            targets = {n_b - 1: amap[1:] - 1}
        elif kind == R_DIM:
            targets = {n_b: amap}
        else:
            gmap = np.array([_gt_index(amap[a], amap[b]) for a in range(n_b) for b in range(a + 1)])
            targets = {_num_genotypes(n_b): gmap, n_b: amap}
        count = _count(rows_j)
        for n_vals, target in targets.items():
            if kind == G_DIM:
                take = count == n_vals
                take &= diploid if n_vals == _num_genotypes(n_b) and n_b > 1 else ~diploid
            else:
                take = count >= 1
            take &= ~_is_dot(rows_j)
            if not take.any():
                continue
            cols = min(n_vals, rows_j.shape[1])
            sub = rows_j[take][:, :cols]
            block = out[take]
            keep = np.arange(cols)[None, :] < count[take][:, None]  # up to the first fill
            block[:, target[:cols]] = np.where(keep, sub, block[:, target[:cols]])
            out[take] = block
    dots = _is_missing(out).sum(axis=1) == size
    out[dots] = _empty((1, 1, width), dtype)[0, 0]
    return out


def _gt_index(a: int, b: int) -> int:
    a, b = min(a, b), max(a, b)
    return b * (b + 1) // 2 + a


def _count(rows):
    """How many values each row holds before its first fill."""
    fill = _is_fill(rows)
    return np.where(fill.any(axis=1), np.argmax(fill, axis=1), rows.shape[1])


def _is_dot(rows):
    """Rows that are a VCF "." (missing, then only fill)."""
    return _is_missing(rows[:, 0]) & (_is_fill(rows[:, 1:]).all(axis=1) if rows.shape[1] > 1 else True)


def _copied(rows, plan: SitePlan, field, site, per_value: bool):
    """A field with no per-allele layout: the records of a split site must agree. A field with a
    trailing dimension that is not R, A or G (``Number=.``) is copied only when the allele
    indexes are unchanged or when it holds no values at the site."""
    first = rows[0]
    for other in rows[1:]:
        if not _equal(first, other):
            _refuse(field, site, f"the batch's {len(rows)} records of this site "
                    f"({'; '.join(_describe(plan, s) for s in plan.sources)}) disagree")
    if per_value and len(rows) == 1 and not plan.in_order():
        if not (_is_missing(first) | _is_fill(first)).all():
            _refuse(field, site, "it has no declared per-allele layout (Number=.) and the batch "
                    f"lists the alleles as {_describe(plan, plan.sources[0])}, the store as "
                    f"{','.join(plan.alleles[: plan.store_alleles])}")
    return first


def _describe(plan: SitePlan, src: Source) -> str:
    return ",".join(plan.alleles[i] for i in src.amap)


def _equal(a, b) -> bool:
    if a.dtype == np.float32:
        return np.array_equal(a.view(np.int32), b.view(np.int32))
    return np.array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# Writing a harmonised batch
# ---------------------------------------------------------------------------------------------


def harmonise_into(store, src_path, dst_path, *, sample_offset: int = 0) -> HarmonisationReport:
    """Write the VCZ at ``src_path`` harmonised to ``store`` (the store's root group) at
    ``dst_path``, laid out with ``sample_offset`` leading empty sample slots. A batch that already
    has the store's variants is moved (or laid out) as it is. Nothing is left at ``dst_path``
    when harmonisation is refused."""
    import zarr

    from vczstore_dagster.store.batch import OFFSET_ATTR
    from vczstore_dagster.store.convert import lay_out_with_offset

    src = zarr.open_group(str(src_path), mode="r")
    report = plan(store, src)
    dst_path = pathlib.Path(dst_path)
    try:
        if not report.harmonised:
            if sample_offset:
                lay_out_with_offset(src_path, dst_path, sample_offset)
            else:
                shutil.move(str(src_path), str(dst_path))
            out = zarr.open_group(str(dst_path), mode="r+", use_consolidated=False)
            out.attrs[HARMONISATION_ATTR] = report.to_attrs()
        else:
            out = zarr.open_group(str(dst_path), mode="w", zarr_format=store.metadata.zarr_format)
            attrs = {k: v for k, v in src.attrs.items() if k not in (OFFSET_ATTR, HARMONISATION_ATTR)}
            out.attrs.update({**attrs, OFFSET_ATTR: sample_offset,
                              HARMONISATION_ATTR: report.to_attrs()})
            _write_variant_arrays(store, out, report)
            _write_sample_arrays(store, src, out, report, sample_offset)
        _consolidate(dst_path)
    except BaseException:
        shutil.rmtree(dst_path, ignore_errors=True)
        raise
    return report


def harmonise_batch(store, batch_path, out_path) -> HarmonisationReport:
    """Harmonise an existing batch VCZ (as converted, not laid out for a store) to ``store`` (a
    Store), writing it at ``out_path`` laid out on the store's sample grid."""
    from vczstore_dagster.store.batch import open_batch

    batch = open_batch(batch_path)
    if batch.sample_offset:
        raise InvalidInputError(f"batch {batch.name} is laid out for a store already; harmonise "
                                "the VCZ it was made from")
    out_path = pathlib.Path(out_path)
    if out_path.exists():
        raise InvalidInputError(f"{out_path}: already exists; choose a new output path")
    group = store.readonly_group()
    offset = schema.num_samples(group) % schema.samples_chunk_size(group)
    tmp = out_path.with_name(out_path.name + ".tmp")
    shutil.copytree(batch_path, tmp)  # an unchanged batch is moved: keep the original
    try:
        return harmonise_into(group, tmp, out_path, sample_offset=offset)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _consolidate(path) -> None:
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "consolidated metadata is not part of the v3 spec"
        zarr.consolidate_metadata(str(path))


def _widened_shape(array, widths: dict) -> list[int]:
    return [max(widths.get(d, size), size) if d in ALLELE_DIMS else size
            for d, size in zip(schema.dims(array), array.shape, strict=True)]


def _write_variant_arrays(store, out, report: HarmonisationReport) -> None:
    """The store's variant arrays, widened (with the new alleles) when new alleles need room."""
    for name, array in store.arrays():
        if schema.sample_axis(array) is not None:
            continue
        shape = _widened_shape(array, report.widths)
        new = schema.create_like(out, name, array, shape=shape)
        if array.ndim == 0:
            new[...] = array[...]
            continue
        step = array.chunks[0]
        for v0 in range(0, array.shape[0], step):
            values = np.asarray(array[v0 : v0 + step])
            if tuple(shape) != array.shape:
                values = _fit(values, shape[-1], _codes(array.dtype)[1])
            new[v0 : v0 + step] = values
        _add_new_alleles(new, report.new_alleles, samples=0)


def _write_sample_arrays(store, src, out, report, offset: int) -> None:
    """The batch's sample arrays on the store's sites, one variant chunk × sample chunk at a time.
    A store field the batch lacks is left out (``check`` names it)."""
    ns = schema.num_samples(src)
    targets = {}
    for name, template in schema.sample_arrays(store).items():
        if name in src:
            shape = _widened_shape(template, report.widths)
            shape[schema.sample_axis(template)] = offset + ns
            targets[name] = schema.create_like(out, name, template, shape=shape)
    targets["sample_id"][offset:] = src["sample_id"][...]
    del targets["sample_id"]
    s_chunk = schema.samples_chunk_size(store)

    def write(v0, v1, block, lo, hi) -> int:
        for name, target in targets.items():
            target[v0:v1, lo:hi] = block.values(name, target)
        return len(targets)

    def blocks():
        for v0, v1, plans in _plans_by_chunk(store, src, HarmonisationReport()):
            needed = sorted({s.index for p in plans for s in p.sources}
                            | {p.ploidy_ref for p in plans if p.ploidy_ref >= 0})
            sites = _site_names(store, v0, v1)
            for c0 in range(0, offset + ns, s_chunk):
                lo, hi = max(c0, offset), min(c0 + s_chunk, offset + ns)
                if lo < hi:
                    block = _Block(src, plans, needed, lo - offset, hi - offset, sites)
                    yield functools.partial(write, v0, v1, block, lo, hi)

    run_blocks(blocks())


def _site_names(store, v0, v1) -> list[str]:
    contigs = schema.strings(store["contig_id"][...])
    contig = np.asarray(store["variant_contig"][v0:v1])
    pos = np.asarray(store["variant_position"][v0:v1])
    return [f"{contigs[int(c)]}:{int(p)}" for c, p in zip(contig, pos, strict=True)]


class _Block:
    """One store variant chunk × one sample chunk of the harmonised batch."""

    def __init__(self, src, plans, needed, b0, b1, sites):
        self.src, self.plans, self.b0, self.b1, self.sites = src, plans, b0, b1, sites
        self.needed = np.asarray(needed, dtype=np.int64)
        self._gt = None

    def rows(self, name):
        """The batch's values of the records this block needs (in ``needed`` order)."""
        array = self.src[name]
        if not len(self.needed):
            return np.empty((0, self.b1 - self.b0, *array.shape[2:]), dtype=array.dtype)
        first, last = int(self.needed[0]), int(self.needed[-1]) + 1
        if last - first == len(self.needed):
            return np.asarray(array[first:last, self.b0 : self.b1])
        sel = (self.needed, slice(self.b0, self.b1)) + (slice(None),) * (array.ndim - 2)
        return np.asarray(array.get_orthogonal_selection(sel))

    def at(self, index) -> int:
        return int(np.searchsorted(self.needed, index))

    def values(self, name, target):
        if name in GENOTYPE_FIELDS:
            values = self.genotypes(target.shape[2] if name != "call_genotype_phased" else None)
            return values[GENOTYPE_FIELDS.index(name)]
        rows = self.rows(name)
        if rows.ndim == 2 and target.ndim == 3:  # a Number=. field with at most one value
            rows = rows[..., None]
        elif rows.ndim != target.ndim:
            raise InvalidInputError(f"batch: field {name} has dimensions {schema.dims(self.src[name])};"
                                    f" the store {schema.dims(target)}")
        dtype = target.dtype
        width = target.shape[2] if target.ndim > 2 else None
        kind = _dim_kind(target)
        fill = _codes(dtype)[1]
        out = _empty((len(self.plans), self.b1 - self.b0) + ((width,) if width else ()), dtype)
        ident = [(i, self.at(p.sources[0].index)) for i, p in enumerate(self.plans) if p.identity()]
        if ident:
            dst, picked = zip(*ident, strict=True)
            values = rows[list(picked)]
            out[list(dst)] = _cast(_fit(values, width, fill) if width else values, dtype, name)
        for i, p in enumerate(self.plans):
            if not p.sources or p.identity():
                continue
            srcs = [rows[self.at(s.index)] for s in p.sources]
            if kind in ALLELE_DIMS:
                value = _per_allele(srcs, p, kind, width, dtype, name, self.sites[i])
            else:
                value = _copied(srcs, p, name, self.sites[i], per_value=width is not None)
                value = _fit(value, width, fill) if width else value
            out[i] = _cast(value, dtype, name)
        return out

    def genotypes(self, ploidy=None):
        """(call_genotype, call_genotype_mask, call_genotype_phased) of the block."""
        if self._gt is not None:
            return self._gt
        rows = self.rows("call_genotype").astype(np.int64)
        phased_rows = self.rows("call_genotype_phased")
        n, ns = len(self.plans), self.b1 - self.b0
        gt = np.full((n, ns, rows.shape[2] if rows.ndim == 3 else ploidy), -1, dtype=np.int64)
        phased = np.zeros((n, ns), dtype=bool)
        for i, p in enumerate(self.plans):
            if not p.sources:
                if p.ploidy_ref >= 0:  # a haploid call keeps the fill value in the unused slot
                    ref = rows[self.at(p.ploidy_ref)]
                    unused = (ref == -2) & ~(ref == -2).all(axis=1, keepdims=True)
                    gt[i][unused] = -2
                continue
            srcs = [rows[self.at(s.index)] for s in p.sources]
            first = phased_rows[self.at(p.sources[0].index)]
            if p.identity():
                gt[i], phased[i] = srcs[0], first
            else:
                gt[i], lost = _genotypes(srcs, p, self.sites[i])
                phased[i] = first & ~lost
        if ploidy is not None:
            gt = _fit(gt, ploidy, -2)
        self._gt = (gt, gt < 0, phased)
        return self._gt


def _cast(values, dtype, name):
    if _is_string(dtype) or values.dtype == dtype:
        return values
    target = np.dtype(dtype)
    if target.kind in "iu" and values.dtype.kind in "iu" and values.size:
        info = np.iinfo(target)
        lo, hi = values.min(), values.max()
        if lo < info.min or hi > info.max:
            raise InvalidInputError(f"field {name}: a value does not fit the store's {target}; "
                                    + widen_hint(name, min(lo, info.min), max(hi, info.max)))
    return values.astype(target)


# ---------------------------------------------------------------------------------------------
# New alleles: widening an array (the harmonised batch's copy, or the store in the append commit)
# ---------------------------------------------------------------------------------------------


def _add_new_alleles(array, new_alleles: list[NewAllele], samples: int) -> None:
    """Give existing rows the new alleles: ``variant_allele`` gets them; an R, A or G field gets
    missing values in their slots (a "." row stays "."). ``samples``: how many call_* columns."""
    kind = _dim_kind(array)
    if kind not in ALLELE_DIMS or not new_alleles:
        return
    name = array.path.rsplit("/", 1)[-1]
    missing = _codes(array.dtype)[0]
    for new in new_alleles:
        v = new.variant
        if name == "variant_allele":
            row = np.asarray(array[v]).copy()
            row[new.existing : new.existing + len(new.alleles)] = new.alleles
            array[v] = row
        elif schema.sample_axis(array) is None:
            array[v] = _open_slots(np.asarray(array[v])[None], new, kind, missing)[0]
        else:
            step = array.chunks[1]
            for s0 in range(0, samples, step):
                rows = np.asarray(array[v, s0 : s0 + step])
                array[v, s0 : s0 + step] = _open_slots(rows, new, kind, missing)


def _open_slots(rows, new: NewAllele, kind, missing):
    """Missing values in the new alleles' slots of every complete row (a "." row stays ".")."""
    n, add = new.existing, len(new.alleles)
    count = _count(rows)
    rows = rows.copy()
    if kind == G_DIM:  # diploid rows hold n(n+1)/2 values, haploid rows n
        spans = [(_num_genotypes(n), _num_genotypes(n + add)), (n, n + add)]
    else:
        k = n - (kind == A_DIM)
        spans = [(k, k + add)]
    for lo, hi in spans:
        sel = (count == lo) & ~_is_dot(rows)
        rows[sel, lo : min(hi, rows.shape[1])] = missing
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
        _add_new_alleles(array, new_alleles, samples)


def _fill_new_slots(array, old_width: int) -> None:
    """Write the fill value into the slots a widened trailing dimension added, block by block."""
    fill = _codes(array.dtype)[1]
    lead = [range(0, size, chunk) for size, chunk in zip(array.shape[:-1], array.chunks[:-1],
                                                          strict=True)]
    for starts in itertools.product(*lead):
        sel = tuple(slice(s, min(s + c, size)) for s, c, size in
                    zip(starts, array.chunks, array.shape, strict=False))
        shape = tuple(x.stop - x.start for x in sel) + (array.shape[-1] - old_width,)
        array[sel + (slice(old_width, None),)] = np.full(shape, fill, dtype=array.dtype)


# ---------------------------------------------------------------------------------------------
# A store from several variant sources
# ---------------------------------------------------------------------------------------------


def union_of_variants(sources, tmp) -> pathlib.Path:
    """One sites-only VCF: the union of the sources' variant sets in genomic order, records
    merged by ``bcftools merge -m none`` (the same site from several sources is one record).
    The sources' FORMAT definitions are kept: they give the store its ``call_*`` fields."""
    bcftools = shutil.which("bcftools")
    if bcftools is None:
        raise InvalidInputError("init from several variant sources needs bcftools on the PATH")
    tmp = pathlib.Path(tmp)
    sites, formats = [], {}
    for i, source in enumerate(map(pathlib.Path, sources)):
        out = tmp / f"sites-{i}.vcf.gz"
        if source.is_dir():
            plain = tmp / f"source-{i}.vcf"
            _vcz_sites(source, plain)
            source = plain
        elif not source.is_file():
            raise InvalidInputError(f"{source}: no such VCF file or VCZ directory")
        for line in _run([bcftools, "view", "-h", source], source).splitlines():
            if line.startswith("##FORMAT=<ID="):
                formats.setdefault(line.split(",", 1)[0], line)
        _run([bcftools, "view", "--no-version", "-G", "-Oz", "-o", out, source], source)
        _run([bcftools, "index", "-f", out], source)
        sites.append(out)
    merged, union, header = tmp / "merged.vcf.gz", tmp / "union.vcf.gz", tmp / "formats.txt"
    _run([bcftools, "merge", "--no-version", "-m", "none", "-Oz", "-o", merged, *sites],
         "merging the variant sources")
    header.write_text("".join(line + "\n" for line in formats.values()))
    _run([bcftools, "annotate", "--no-version", "-h", header, "-Oz", "-o", union, merged],
         "merging the variant sources")
    _run([bcftools, "index", "-f", union], union)
    return union


def _vcz_sites(path, out) -> None:
    from vcztools.retrieval import VczReader
    from vcztools.vcf_writer import write_vcf

    from vczstore_dagster.store.batch import open_batch

    batch = open_batch(path)
    with open(out, "w") as f, VczReader(batch.group) as reader:
        write_vcf(reader, f, no_version=True)


def _run(cmd, what) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise InvalidInputError(f"{what}: {proc.stderr.strip()[:300]}")
    return proc.stdout
