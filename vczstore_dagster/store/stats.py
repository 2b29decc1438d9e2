"""Per-variant statistics recomputed over the active samples, written before a release is tagged.

AC (per ALT allele) and AN count called alleles, as ``bcftools +fill-tags`` does; AF = AC / AN;
call_rate is the fraction of active samples whose genotype has no missing allele. Genotypes are read
one block (variant chunk × sample chunk) at a time. When a release is redacted, the removed samples'
counts are taken out of its statistics (:func:`sample_counts`, :func:`remove_samples_from_stats`):
one chunk column read instead of every genotype, with the same integers as a recount.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vczstore_dagster.store import schema

STATS_FIELDS = {
    "variant_AC": ("alt_alleles", "i4", "Allele count in genotypes, for each ALT allele (recomputed for the release)"),
    "variant_AN": (None, "i4", "Total number of alleles in called genotypes (recomputed for the release)"),
    "variant_AF": ("alt_alleles", "f4", "Allele frequency, for each ALT allele (recomputed for the release)"),
    "variant_NS": (None, "i4", "Number of samples with data (recomputed for the release)"),
    "variant_call_rate": (None, "f4", "Fraction of released samples with a fully called genotype"),
}
MISSING_F4 = np.array([0x7F800001], dtype=np.int32).view(np.float32)[0]
FILL_F4 = np.array([0x7F800002], dtype=np.int32).view(np.float32)[0]


def compute(group):
    """Yield ``(v0, v1, ac, an, ns, af, call_rate)`` for each variant chunk."""
    gt = group["call_genotype"]
    active = schema.strings(group["sample_id"][...]) != ""
    n_active = int(active.sum())
    n_alleles = group["variant_allele"].shape[1]
    vchunk, schunk = gt.chunks[0], gt.chunks[1]
    for v0 in range(0, gt.shape[0], vchunk):
        v1 = min(gt.shape[0], v0 + vchunk)
        counts = np.zeros((v1 - v0, n_alleles), dtype=np.int64)
        called = np.zeros(v1 - v0, dtype=np.int64)
        with_data = np.zeros(v1 - v0, dtype=np.int64)
        for s0 in range(0, gt.shape[1], schunk):
            s1 = min(gt.shape[1], s0 + schunk)
            keep = active[s0:s1]
            if not keep.any():
                continue
            block = np.asarray(gt[v0:v1, s0:s1])
            _count(block if keep.all() else block[:, keep], counts, called, with_data)
        present = schema.strings(group["variant_allele"][v0:v1, 1:]) != ""
        yield v0, v1, *_stats(counts, called, with_data, present, n_active)


def _count(block, counts, called, with_data) -> None:
    """Add the genotypes of ``block`` (variants × samples × ploidy) to the per-variant counts."""
    # Reductions along one contiguous axis, in int32, and per-ploidy slices instead of
    # np.all/np.any over the last axis: several times faster on large blocks.
    flat = block.reshape(block.shape[0], -1)
    for a in range(counts.shape[1]):
        counts[:, a] += np.add.reduce(flat == a, axis=1, dtype=np.int32)
    all_called = block[:, :, 0] != -1
    any_data = block[:, :, 0] >= 0
    for k in range(1, block.shape[2]):
        all_called &= block[:, :, k] != -1
        any_data |= block[:, :, k] >= 0
    called += np.add.reduce(all_called, axis=1, dtype=np.int32)
    with_data += np.add.reduce(any_data, axis=1, dtype=np.int32)


def _stats(counts, called, with_data, present, n_active):
    """``(ac, an, ns, af, call_rate)`` from allele counts and genotype counts per variant."""
    an = counts.sum(axis=1)
    ac = np.where(present, counts[:, 1:], -2)
    with np.errstate(invalid="ignore", divide="ignore"):
        af = (counts[:, 1:] / np.maximum(an, 1)[:, None]).astype("f4")
    af[an == 0] = MISSING_F4
    af[~present] = FILL_F4
    rate = (called / n_active).astype("f4") if n_active else np.full(len(an), MISSING_F4)
    return ac, an, with_data, af, rate


@dataclasses.dataclass
class SampleCounts:
    num_samples: int
    counts: np.ndarray  # per variant and allele (REF first)
    called: np.ndarray  # genotypes with no missing allele, per variant
    with_data: np.ndarray  # genotypes with some allele, per variant


def sample_counts(group, indexes) -> SampleCounts:
    """The counts per variant over the samples at ``indexes`` only, reading just their
    sample-chunk columns of ``call_genotype``."""
    gt = group["call_genotype"]
    n, s = gt.shape[0], gt.chunks[1]
    counts = np.zeros((n, group["variant_allele"].shape[1]), dtype=np.int64)
    called, with_data = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    indexes = np.asarray(indexes)
    for c in np.unique(indexes // s):
        local = indexes[indexes // s == c] - c * s
        for v0 in range(0, n, gt.chunks[0]):
            v1 = min(n, v0 + gt.chunks[0])
            block = np.asarray(gt[v0:v1, c * s : min(gt.shape[1], (c + 1) * s)])[:, local]
            _count(block, counts[v0:v1], called[v0:v1], with_data[v0:v1])
    return SampleCounts(len(indexes), counts, called, with_data)


def remove_samples_from_stats(group, removed: SampleCounts) -> bool:
    """Take the counts ``removed`` (:func:`sample_counts` of samples since removed, read before
    they were) out of the statistics written for the samples before; the same integers as a
    recount. call_rate keeps only its ratio: the fully called count comes back exactly from it
    below 2**23 samples, else (or without statistics) nothing is done and False is returned."""
    counts, called, with_data = removed.counts, removed.called, removed.with_data
    if any(name not in group for name in STATS_FIELDS):
        return False
    n_after = int((schema.strings(group["sample_id"][...]) != "").sum())
    n_before = n_after + removed.num_samples
    if n_before >= 2**23:
        return False
    ac = np.asarray(group["variant_AC"][...]).astype(np.int64)
    present = ac != -2
    alt = np.where(present, ac, 0) - counts[:, 1:]
    an = np.asarray(group["variant_AN"][...]).astype(np.int64) - counts.sum(axis=1)
    ref = an - alt.sum(axis=1)
    rate = np.asarray(group["variant_call_rate"][...]).astype(np.float64)
    was_called = np.rint(np.where(np.isnan(rate), 0, rate) * n_before).astype(np.int64)
    ns = np.asarray(group["variant_NS"][...]).astype(np.int64) - with_data
    new = _stats(np.column_stack([ref, alt]), was_called - called, ns, present, n_after)
    for name, values in zip(("variant_AC", "variant_AN", "variant_NS", "variant_AF",
                             "variant_call_rate"), new, strict=True):
        group[name][...] = values
    return True


def write_release_stats(group) -> list[str]:
    """Replace the sample-derived INFO arrays with values for the current samples."""
    n_variants = schema.num_variants(group)
    vchunk = schema.variants_chunk_size(group)
    n_alt = group["variant_allele"].shape[1] - 1
    arrays = {}
    for name, (second, dtype, description) in STATS_FIELDS.items():
        if name in group:
            del group[name]
        shape = (n_variants, n_alt) if second else (n_variants,)
        chunks = (vchunk, n_alt) if second else (vchunk,)
        dims = ["variants", second] if second else ["variants"]
        kwargs = dict(name=name, shape=shape, chunks=chunks, dtype=dtype,
                      compressors=group["variant_position"].compressors,
                      fill_value=-2 if dtype == "i4" else FILL_F4, attributes={"description": description})
        if group.metadata.zarr_format == 3:
            kwargs["dimension_names"] = dims
        else:
            kwargs["attributes"]["_ARRAY_DIMENSIONS"] = dims
        arrays[name] = group.create_array(**kwargs)
    for v0, v1, ac, an, ns, af, rate in compute(group):
        arrays["variant_AC"][v0:v1] = ac
        arrays["variant_AN"][v0:v1] = an
        arrays["variant_NS"][v0:v1] = ns
        arrays["variant_AF"][v0:v1] = af
        arrays["variant_call_rate"][v0:v1] = rate
    return list(STATS_FIELDS)
