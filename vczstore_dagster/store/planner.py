"""The one pass over the store's variant set and a batch's that makes the :class:`VariantPlan`:
a forward walk, one store block at a time, that decides what each store site takes from the
batch (:mod:`vczstore_dagster.store.sites`) and counts, per contig, what is covered, filled with
missing values and dropped. Harmonising a batch walks again to write it (:func:`plans_by_chunk`).
"""

from __future__ import annotations

import dataclasses
from math import comb

import numpy as np

from vczstore_dagster.store import contigs, schema
from vczstore_dagster.store.errors import InvalidInputError
from vczstore_dagster.store.plan import NewAllele, VariantPlan
from vczstore_dagster.store.sites import (
    SitePlan,
    Source,
    allele_rows,
    match_position,
    merged_alleles,
)

R_DIM, A_DIM, G_DIM = "alleles", "alt_alleles", "genotypes"
ALLELE_DIMS = (R_DIM, A_DIM, G_DIM)


def plan_variants(store, batch) -> VariantPlan:
    """What harmonising ``batch`` (a zarr group) to ``store`` (a zarr group) does, with its
    coverage figures and signs of another reference; reads only the variant arrays."""
    plan = VariantPlan()
    for _ in _Planner(store, batch, plan, sites=False).blocks():
        pass
    plan.harmonised = plan.harmonised or plan.changed or (
        schema.num_variants(store) != schema.num_variants(batch))
    width = max([n.existing + len(n.alleles) for n in plan.new_alleles], default=0)
    if width > store["variant_allele"].shape[1]:
        plan.widths = allele_widths(store, width)
    _diagnose(store, batch, plan)
    return plan


def _diagnose(store, batch, plan: VariantPlan) -> None:
    """Contigs named another way, contig lengths that differ, positions shifted by one."""
    store_names = list(schema.strings(store["contig_id"][...]))
    batch_names = list(schema.strings(batch["contig_id"][...]))
    plan.contigs = {**{n: plan.contigs[n] for n in store_names if n in plan.contigs},
                    **plan.contigs}  # the store's contigs first, in its order
    with_records = [n for n in batch_names if plan.contigs.get(n) and plan.contigs[n].records]
    plan.aliases = contigs.aliases(store_names, with_records)
    pairs = [(n, n) for n in store_names if n in batch_names]
    pairs += [(known, other) for other, known in plan.aliases]
    plan.length_conflicts = contigs.length_conflicts(contigs.lengths(store), contigs.lengths(batch),
                                                     pairs)
    for name in store_names:
        counts = plan.contigs.get(name)
        if counts is not None and counts.records and counts.store_sites:
            s = contigs.shift(counts.hits, min(counts.store_sites, counts.records))
            if s:
                plan.shifts[name] = s


def allele_widths(store, n_alleles: int) -> dict[str, int]:
    ploidy = store["call_genotype"].shape[2] if "call_genotype" in store else 2
    return {R_DIM: n_alleles, A_DIM: n_alleles - 1, G_DIM: num_genotypes(n_alleles, ploidy)}


def num_genotypes(n_alleles: int, ploidy: int = 2) -> int:
    return comb(n_alleles + ploidy - 1, ploidy)


def plans_by_chunk(store, batch, plan: VariantPlan):
    """``(v0, v1, [SitePlan, ...])`` for each store variant chunk (what harmonising writes);
    counts go to ``plan``."""
    planner = _Planner(store, batch, plan)
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


def contig_ranges(batch) -> dict[int, tuple[int, int]]:
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
    return {c: (int(a), int(b)) for c, (a, b) in ranges.items()}


class _Planner:
    """Plans the store's sites block by block; ``plan`` collects the counts as it goes. With
    ``sites=False`` the store sites a batch has as they are get no :class:`SitePlan` (None):
    counting them is all a check needs."""

    def __init__(self, store, batch, plan: VariantPlan, block: int | None = None, sites: bool = True):
        self.plan, self.sites = plan, sites
        self.s_contig, self.s_pos, self.s_allele = (
            _Chunked(store[n]) for n in ("variant_contig", "variant_position", "variant_allele"))
        self.b_pos, self.b_allele = (_Chunked(batch[n]) for n in ("variant_position", "variant_allele"))
        self.n = schema.num_variants(store)
        self.block = block or schema.variants_chunk_size(store)
        self.contigs = list(schema.strings(store["contig_id"][...]))
        self.b_contigs = list(schema.strings(batch["contig_id"][...]))
        self.ranges = contig_ranges(batch)
        by_name = {name: i for i, name in enumerate(self.b_contigs)}
        self.batch_contig = {i: by_name[c] for i, c in enumerate(self.contigs) if c in by_name}
        self.cursor = {bc: start for bc, (start, _) in self.ranges.items()}
        self.last_pos: dict[int, int] = {}
        plan.store_sites = self.n
        plan.batch_records = schema.num_variants(batch)
        for bc, (start, stop) in self.ranges.items():
            plan.contig(self.b_contigs[bc]).records += stop - start

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
                name = self.b_contigs[bc]
                self.plan.dropped += left
                self.plan.contig(name).dropped += left
                self.plan.note("dropped", f"{name}:{int(self.b_pos[self.cursor[bc]:][0])}")

    def _block_end(self, v0: int) -> int:
        v1 = min(self.n, v0 + self.block)
        while v1 < self.n:
            c = self.s_contig[v1 - 1 : v1 + self.block]
            p = self.s_pos[v1 - 1 : v1 + self.block]
            same = (c[1:] == c[0]) & (p[1:] == p[0])
            if not same.all():
                return v1 + int(np.argmin(same))
            v1 = min(self.n, v1 + len(same))
        return v1

    def _plan(self, v0: int, v1: int) -> list[SitePlan]:
        contig = self.s_contig[v0:v1]
        pos = self.s_pos[v0:v1]
        alleles = schema.strings(self.s_allele[v0:v1])
        plans: list[SitePlan | None] = [None] * (v1 - v0)
        runs = np.flatnonzero(np.diff(contig)) + 1
        for a, b in zip([0, *runs], [*runs, v1 - v0], strict=True):
            self._plan_contig(int(contig[a]), pos[a:b], alleles[a:b], plans, a, v0)
        return plans

    def _plan_contig(self, c, pos, raw_alleles, plans, offset, v0) -> None:
        name = self.contigs[c]
        counts = self.plan.contig(name)
        counts.store_sites += len(pos)
        bc = self.batch_contig.get(c)
        if bc is None or bc not in self.ranges:
            for i, al in enumerate(allele_rows(raw_alleles)):
                plans[offset + i] = SitePlan(al, len(al))
                self._missing(name, pos[i])
            return
        start, stop = self.ranges[bc]
        cur = self.cursor[bc]
        end = self._advance(cur, stop, int(pos[-1]))
        bpos = self.b_pos[cur:end].astype(np.int64)
        if len(bpos) and (np.any(np.diff(bpos) < 0) or bpos[0] < self.last_pos.get(bc, -1)):
            raise InvalidInputError(f"batch: variants of contig {name} are not sorted "
                                    "by position; sort the VCF (bcftools sort) and convert again")
        if len(bpos):
            self.last_pos[bc] = int(bpos[-1])
        for s, n in contigs.position_hits(pos, bpos).items():
            counts.hits[s] += n
        raw_balleles = schema.strings(self.b_allele[cur:end])
        self.cursor[bc] = end
        if len(bpos) == len(pos) and np.array_equal(bpos, pos) and _same_rows(raw_alleles,
                                                                              raw_balleles):
            counts.covered += len(pos)  # the common case: the same records
            if cur != v0 + offset:
                self.plan.harmonised = True  # ... in other places
            if self.sites:
                for i, al in enumerate(allele_rows(raw_alleles)):
                    plans[offset + i] = SitePlan(al, len(al),
                                                 (Source(cur + i, tuple(range(len(al)))),))
            return
        alleles, balleles = allele_rows(raw_alleles), allele_rows(raw_balleles)
        used = np.zeros(end - cur, dtype=bool)
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
                site = self._site(name, int(pos[s]), alleles[s], taken, balleles, cur,
                                  v0 + offset + s)
                if not taken:
                    site = dataclasses.replace(
                        site, ploidy_ref=_ploidy_ref(bpos, pos[s], cur, start, stop))
                plans[offset + s] = site
            i = k
        for j in np.flatnonzero(~used):
            self.plan.dropped += 1
            counts.dropped += 1
            self.plan.note("dropped", f"{name}:{int(bpos[j])}")

    def _advance(self, cur: int, stop: int, p_hi: int) -> int:
        """The first batch index at or after ``cur`` whose position is beyond ``p_hi``."""
        step = self.b_pos.step
        j = cur
        while j < stop:
            chunk = self.b_pos[j : min(stop, j + step)]
            k = int(np.searchsorted(chunk, p_hi, side="right"))
            if k < len(chunk):
                return j + k
            j += len(chunk)
        return stop

    def _missing(self, name, p) -> None:
        self.plan.missing_filled += 1
        self.plan.note("missing_filled", f"{name}:{int(p)}")

    def _site(self, name, p, store_alleles, taken, balleles, cur, variant) -> SitePlan:
        if not taken:
            self._missing(name, p)
            return SitePlan(store_alleles, len(store_alleles))
        self.plan.contig(name).covered += 1
        records = [balleles[j] for j in taken]  # ``taken``: indexes into the window at ``cur``
        merged = merged_alleles([store_alleles, *records])
        sources = tuple(Source(cur + j, tuple(merged.index(a) for a in rec))
                        for j, rec in zip(taken, records, strict=True))
        site_plan = SitePlan(merged, len(store_alleles), sources)
        site = f"{name}:{p}"
        if len(merged) > len(store_alleles):
            self.plan.new_alleles.append(
                NewAllele(int(variant), site, [str(a) for a in merged[len(store_alleles):]],
                          int(len(store_alleles))))
        if len(sources) > 1:
            self.plan.split_merged += 1
            self.plan.note("split_merged", site)
        elif not site_plan.identity() and len(merged) == len(store_alleles):
            self.plan.remapped += 1
            self.plan.note("remapped", site)
        elif sources[0].index != variant:
            self.plan.harmonised = True  # same records, other places
        return site_plan


def _same_rows(a, b) -> bool:
    """Two blocks of ``variant_allele`` (as str) hold the same alleles, whatever their padding."""
    width = max(a.shape[1], b.shape[1])
    pad = [np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values="") for x in (a, b)]
    return pad[0].shape == pad[1].shape and bool(np.all(pad[0] == pad[1]))


class _Chunked:
    """Slices of an array along its first axis, read one whole chunk at a time and the last few
    chunks kept: the walk reads each chunk of a variant array once."""

    KEPT = 4

    def __init__(self, array):
        self.array, self.step, self.size = array, array.chunks[0], array.shape[0]
        self.chunks: dict[int, np.ndarray] = {}

    def _chunk(self, k: int) -> np.ndarray:
        if k not in self.chunks:
            if len(self.chunks) >= self.KEPT:
                del self.chunks[next(iter(self.chunks))]
            self.chunks[k] = np.asarray(self.array[k * self.step : (k + 1) * self.step])
        return self.chunks[k]

    def __getitem__(self, sel: slice) -> np.ndarray:
        start, stop = max(0, sel.start or 0), min(self.size, self.size if sel.stop is None else sel.stop)
        if stop <= start:
            return self._chunk(0)[:0] if self.size else np.asarray(self.array[0:0])
        parts = [self._chunk(k)[max(start, k * self.step) - k * self.step : stop - k * self.step]
                 for k in range(start // self.step, (stop - 1) // self.step + 1)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _ploidy_ref(bpos, p, cur, start, stop) -> int:
    """A batch record near position ``p`` whose ploidy a missing-filled site takes."""
    k = int(np.searchsorted(bpos, p, side="right")) - 1
    if k >= 0:
        return cur + k
    if cur > start:
        return cur - 1
    return start if stop > start else -1
