"""Matching a batch's records to the store's sites at one position, and what each site takes.

At one contig and position, a store site takes the batch record with the same REF and ALT set;
records left over at one REF are merged first when they are the split parts of one site (as
``bcftools norm -m+`` merges them) and taken together, else one by one by the first store site
with the same REF whose ALTs contain theirs, else overlap theirs, else by any site with that REF:
ALTs the site does not have are *new alleles*. A record with the same REF bringing an ALT to a
site already taken is a split part of it. Anything else at the position is not in the store.
"""

from __future__ import annotations

import dataclasses

from vczstore_dagster.store import schema


def match_position(store_sites, batch_records) -> dict[int, list[int]]:
    """Which batch records each store site at one position takes: ``{store k: [batch j, ...]}``.
    Both arguments are lists of allele tuples (REF first)."""
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
    left = []
    for js in by_ref.values():
        if len(js) > 1:  # split records: merged when a store site takes them together
            k = _partner(store_sites, free_s, merged_alleles([batch_records[j] for j in js]))
            if k is not None:
                pairs[k] = js
                free_s.remove(k)
                continue
        for j in js:
            k = _partner(store_sites, free_s, batch_records[j])
            if k is None:
                left.append(j)
            else:
                pairs[k] = [j]
                free_s.remove(k)
    for j in left:  # an ALT the site taken at this REF lacks: a split part of that site
        rec = batch_records[j]
        for k in sorted(pairs):
            have = set(store_sites[k]) | {a for i in pairs[k] for a in batch_records[i]}
            if store_sites[k][0] == rec[0] and not set(rec[1:]) <= have:
                pairs[k] = sorted([*pairs[k], j])
                break
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
    return same_ref[0] if same_ref else None


def merged_alleles(records) -> tuple[str, ...]:
    """REF and the union of the ALTs in order of appearance (``bcftools norm -m+``)."""
    out = [records[0][0]]
    for rec in records:
        out.extend(a for a in rec[1:] if a not in out)
    return tuple(out)


def allele_rows(values) -> list[tuple[str, ...]]:
    """Rows of a ``variant_allele`` block as tuples of their alleles (REF first, no padding)."""
    return [tuple(a for a in row if a) for row in schema.strings(values)]


@dataclasses.dataclass(frozen=True)
class Source:
    index: int  # batch variant index
    amap: tuple[int, ...]  # batch allele k → output allele amap[k]


@dataclasses.dataclass(frozen=True)
class SitePlan:
    """What one store site of the harmonised batch is made of."""

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

    def describe(self, source: Source) -> str:
        return ",".join(self.alleles[i] for i in source.amap)
