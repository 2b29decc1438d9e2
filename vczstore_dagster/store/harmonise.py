"""Harmonise a batch to the store's variant set: carry out its :class:`VariantPlan`.

The store's variant set is fixed; a batch from another pipeline run may lack some of its variants,
carry extra ones, list a site's ALT alleles in another order, split a multi-allelic site into
several records, or bring a new ALT allele. The result has exactly the store's variant arrays and
the batch's sample arrays aligned to them, as ``bcftools norm -m+`` (of split records) followed by
``bcftools merge -m none`` with the store would give:

- a store site the batch lacks: missing genotypes and missing values in every ``call_*`` field
  (a haploid sample keeps the fill value in its unused ploidy slot);
- a batch record no store site takes: dropped and counted;
- a record taken by a store site (:mod:`~vczstore_dagster.store.sites`): its genotypes and its
  R, A and G fields remapped (:mod:`~vczstore_dagster.store.sitevalues`);
- ALT alleles the store's site does not have are *new alleles*: recorded, appended after the
  store's alleles; ``append`` refuses them unless asked to widen the store in the same commit.

The plan is judged before anything is written (:func:`~vczstore_dagster.store.policy.assess`):
a batch that would fill the store with missing data, or that is on another reference, is refused.
Everything works block by block (one store variant chunk × one sample chunk), never a whole array.
"""

from __future__ import annotations

import functools
import pathlib
import shutil

import numpy as np

from vczstore_dagster.store import missing, schema
from vczstore_dagster.store.alleles import add_new_alleles, dim_kind
from vczstore_dagster.store.blocks import run_blocks
from vczstore_dagster.store.errors import IncompatibleBatchError, InvalidInputError
from vczstore_dagster.store.findings import CompatibilityReport, refusal
from vczstore_dagster.store.integrity import damaged_chunks, describe
from vczstore_dagster.store.layout import consolidate, lay_out_with_offset
from vczstore_dagster.store.plan import HARMONISATION_ATTR, VariantPlan
from vczstore_dagster.store.planner import ALLELE_DIMS, plan_variants, plans_by_chunk
from vczstore_dagster.store.policy import Thresholds, assess
from vczstore_dagster.store.sitevalues import (
    CannotHarmonise,
    Number,
    cast,
    copied,
    genotypes,
    per_allele,
)

GENOTYPE_FIELDS = ("call_genotype", "call_genotype_mask", "call_genotype_phased")
DEFAULT = Thresholds()


def refuse_if_wrong(plan: VariantPlan, name: str, thresholds: Thresholds | None) -> None:
    """Refuse a batch whose plan fails ``thresholds`` or shows another reference (None: judge
    nothing here and leave the verdict to ``check``). New alleles are the append's decision."""
    if thresholds is None:
        return
    findings = assess(plan, name, thresholds, allow_new_alleles=True)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise IncompatibleBatchError(refusal(name, errors), CompatibilityReport(findings, plan=plan))


def harmonise_into(store, src_path, dst_path, *, sample_offset: int = 0,
                   thresholds: Thresholds | None = DEFAULT, name: str | None = None,
                   keep_source: bool = False) -> VariantPlan:
    """Write the VCZ at ``src_path`` harmonised to ``store`` (the store's root group) at
    ``dst_path``, laid out with ``sample_offset`` leading empty sample slots. A batch that already
    has the store's variants is moved (copied with ``keep_source``) or laid out as it is. Nothing
    is written when the plan is refused (see :func:`refuse_if_wrong`), and nothing is left at
    ``dst_path`` on any error."""
    import zarr

    from vczstore_dagster.store.batch import OFFSET_ATTR

    dst_path = pathlib.Path(dst_path)
    src = zarr.open_group(str(src_path), mode="r")
    plan = plan_variants(store, src)
    refuse_if_wrong(plan, name or dst_path.name, thresholds)
    try:
        if not plan.harmonised:
            if sample_offset:
                lay_out_with_offset(src_path, dst_path, sample_offset)
            elif keep_source:
                shutil.copytree(src_path, dst_path)
            else:
                shutil.move(str(src_path), str(dst_path))
            out = zarr.open_group(str(dst_path), mode="r+", use_consolidated=False)
            out.attrs[HARMONISATION_ATTR] = plan.to_attrs()
        else:
            out = zarr.open_group(str(dst_path), mode="w", zarr_format=store.metadata.zarr_format)
            attrs = {k: v for k, v in src.attrs.items() if k not in (OFFSET_ATTR, HARMONISATION_ATTR)}
            out.attrs.update({**attrs, OFFSET_ATTR: sample_offset,
                              HARMONISATION_ATTR: plan.to_attrs()})
            _write_variant_arrays(store, out, plan)
            _write_sample_arrays(store, src, out, plan, sample_offset)
        consolidate(dst_path)
    except CannotHarmonise as exc:
        shutil.rmtree(dst_path, ignore_errors=True)
        raise CannotHarmonise(f"batch {name or dst_path.name}: {exc}") from exc
    except BaseException:
        shutil.rmtree(dst_path, ignore_errors=True)
        raise
    return plan


def harmonise_batch(store, batch_path, out_path, *,
                    thresholds: Thresholds | None = DEFAULT) -> VariantPlan:
    """Harmonise an existing batch VCZ (as converted, not laid out for a store) to ``store`` (a
    Store), writing it at ``out_path`` laid out on the store's sample grid; the input is kept."""
    from vczstore_dagster.store.batch import open_batch

    batch = open_batch(batch_path)
    if batch.sample_offset:
        raise InvalidInputError(f"batch {batch.name} is laid out for a store already; harmonise "
                                "the VCZ it was made from")
    out_path = pathlib.Path(out_path)
    if out_path.exists():
        raise InvalidInputError(f"{out_path}: already exists; choose a new output path")
    damaged = damaged_chunks(batch.path, batch.group, schema.sample_arrays(batch.group))
    if damaged:
        raise InvalidInputError(describe(batch.name, damaged))
    group = store.readonly_group()
    offset = schema.num_samples(group) % schema.samples_chunk_size(group)
    return harmonise_into(group, batch_path, out_path, sample_offset=offset, thresholds=thresholds,
                          name=batch.name, keep_source=True)


def _widened_shape(array, widths: dict) -> list[int]:
    return [max(widths.get(d, size), size) if d in ALLELE_DIMS else size
            for d, size in zip(schema.dims(array), array.shape, strict=True)]


def _write_variant_arrays(store, out, plan: VariantPlan) -> None:
    """The store's variant arrays, widened (with the new alleles) when new alleles need room."""
    for name, array in store.arrays():
        if schema.sample_axis(array) is not None:
            continue
        shape = _widened_shape(array, plan.widths)
        new = schema.create_like(out, name, array, shape=shape)
        if array.ndim == 0:
            new[...] = array[...]
            continue
        step = array.chunks[0]
        for v0 in range(0, array.shape[0], step):
            values = np.asarray(array[v0 : v0 + step])
            if tuple(shape) != array.shape:
                values = missing.fit(values, shape[-1], missing.codes(array.dtype)[1])
            new[v0 : v0 + step] = values
        add_new_alleles(new, plan.new_alleles, samples=0)


def _write_sample_arrays(store, src, out, plan: VariantPlan, offset: int) -> None:
    """The batch's sample arrays on the store's sites, one variant chunk × sample chunk at a time.
    A store field the batch lacks is left out (``check`` names it)."""
    ns = schema.num_samples(src)
    targets, numbers = {}, {}
    for name, template in schema.sample_arrays(store).items():
        if name in src:
            shape = _widened_shape(template, plan.widths)
            shape[schema.sample_axis(template)] = offset + ns
            targets[name] = schema.create_like(out, name, template, shape=shape)
            numbers[name] = Number.of(src[name], template)
            if numbers[name].recorded_by == "batch":  # the batch's values, as its header says
                targets[name].attrs[schema.VCF_NUMBER_ATTR] = numbers[name].value
    targets["sample_id"][offset:] = src["sample_id"][...]
    del targets["sample_id"]
    s_chunk = schema.samples_chunk_size(store)

    def write(v0, v1, block, lo, hi) -> int:
        for name, target in targets.items():
            target[v0:v1, lo:hi] = block.values(name, target)
        return len(targets)

    def blocks():
        for v0, v1, plans in plans_by_chunk(store, src, VariantPlan()):
            needed = sorted({s.index for p in plans for s in p.sources}
                            | {p.ploidy_ref for p in plans if p.ploidy_ref >= 0})
            sites = _site_names(store, v0, v1)
            for c0 in range(0, offset + ns, s_chunk):
                lo, hi = max(c0, offset), min(c0 + s_chunk, offset + ns)
                if lo < hi:
                    block = _Block(src, plans, needed, lo - offset, hi - offset, sites, numbers)
                    yield functools.partial(write, v0, v1, block, lo, hi)

    run_blocks(blocks())


def _site_names(store, v0, v1) -> list[str]:
    contigs = schema.strings(store["contig_id"][...])
    contig = np.asarray(store["variant_contig"][v0:v1])
    pos = np.asarray(store["variant_position"][v0:v1])
    return [f"{contigs[int(c)]}:{int(p)}" for c, p in zip(contig, pos, strict=True)]


class _Block:
    """One store variant chunk × one sample chunk of the harmonised batch."""

    def __init__(self, src, plans, needed, b0, b1, sites, numbers):
        self.src, self.plans, self.b0, self.b1, self.sites = src, plans, b0, b1, sites
        self.numbers = numbers
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
        kind = dim_kind(target)
        fill = missing.codes(dtype)[1]
        out = missing.empty((len(self.plans), self.b1 - self.b0) + ((width,) if width else ()), dtype)
        ident = [(i, self.at(p.sources[0].index)) for i, p in enumerate(self.plans) if p.identity()]
        if ident:
            dst, picked = zip(*ident, strict=True)
            values = rows[list(picked)]
            out[list(dst)] = cast(missing.fit(values, width, fill) if width else values, dtype, name)
        for i, p in enumerate(self.plans):
            if not p.sources or p.identity():
                continue
            srcs = [rows[self.at(s.index)] for s in p.sources]
            if kind in ALLELE_DIMS:
                value = per_allele(srcs, p, kind, width, dtype, name, self.sites[i])
            else:
                value = copied(srcs, p, name, self.sites[i], self.numbers[name], width)
                value = missing.fit(value, width, fill) if width else value
            out[i] = cast(value, dtype, name)
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
                gt[i], lost = genotypes(srcs, p, self.sites[i])
                phased[i] = first & ~lost
        if ploidy is not None:
            gt = missing.fit(gt, ploidy, -2)
        self._gt = (gt, gt < 0, phased)
        return self._gt
