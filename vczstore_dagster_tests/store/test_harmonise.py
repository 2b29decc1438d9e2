"""Variant harmonisation: batches whose variant sets or allele order differ from the store's.

Ground truth for every case: ``vcztools view`` of the store equals ``bcftools merge -m none`` of the
original VCFs (a split batch through ``bcftools norm -m+any`` first), restricted to the store's
sites. The batches come from the project's generator with edited site lists (sites dropped, added,
ALT alleles reordered or added) or its ``split_multiallelic`` and ``haploid_contigs`` options.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import zarr

from vczstore_dagster import testdata
from vczstore_dagster_tests import helpers

NV = 60  # 30 per contig
VCHUNK = 16  # several variant chunks per contig, one spanning both contigs
SCHUNK = 4  # the first batch's 6 samples leave a partial sample chunk column
SITES = tuple(testdata.make_sites(NV, seed=11))
MULTI = [i for i, s in enumerate(SITES) if len(s.alts) > 1]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def sorted_sites(sites):
    order = list(testdata.CONTIGS)
    return tuple(sorted(sites, key=lambda s: (order.index(s.contig), s.position)))


def first_batch(vcf_batch, **kwargs):
    return vcf_batch("S", 6, num_variants=NV, sites=SITES, **kwargs)


def new_store(make_store, vcf, kind="icechunk"):
    store, _ = make_store(kind, [vcf], samples_chunk_size=SCHUNK, variants_chunk_size=VCHUNK,
                          batch_id="b0")
    return store


def convert(store, vcf, tmp_path, name="batch.vcz"):
    out = tmp_path / name
    result = helpers.convert_like(store, [vcf], out)
    return out, result


def bcftools_merge_none(vcfs, tmp_path, *, split=()) -> str:
    """``bcftools merge -m none`` of the VCFs; those in ``split`` through ``norm -m+any`` first."""
    paths = []
    for i, vcf in enumerate(vcfs):
        if vcf in split:
            normed = tmp_path / f"normed-{i}.vcf.gz"
            helpers.run(["bcftools", "norm", "--no-version", "-m", "+any", "-Oz", "-o", normed, vcf])
            helpers.run(["bcftools", "index", "-f", normed])
            vcf = normed
        paths.append(str(vcf))
    return helpers.run(["bcftools", "merge", "--no-version", "-m", "none", *paths]).stdout


def assert_matches_merge(store, vcfs, tmp_path, *, split=(), haploid=None):
    """vcztools' view of the store == bcftools merge -m none of ``vcfs``, on the store's sites
    (``haploid``: (samples, contigs) whose missing calls are haploid)."""
    got = helpers.parse_vcf_text(helpers.store_vcf_text(store))
    expected = helpers.parse_vcf_text(bcftools_merge_none(vcfs, tmp_path, split=split))
    if haploid is not None:
        helpers.haploid_missing(expected, *haploid)
    keys = {(r[0], r[1], r[3], r[4]) for r in got.rows}
    expected.rows = [r for r in expected.rows if (r[0], r[1], r[3], r[4]) in keys]
    assert len(got.rows) == schema_variants(store)
    problems = helpers.compare_tables(expected, got)
    assert not problems, "vcztools view of the store differs from bcftools:\n  " + "\n  ".join(
        problems)
    return got


def schema_variants(store) -> int:
    return int(store.readonly_group()["variant_position"].shape[0])


def findings(report, concern="variants"):
    return {f.id: f for f in report.findings if f.concern == concern}


def site_name(site) -> str:
    return f"{site.contig}:{site.position}"


# ---------------------------------------------------------------------------------------------
# Matching records at one position (pure)
# ---------------------------------------------------------------------------------------------


def test_match_position_rules():
    from vczstore_dagster.store.sites import match_position, merged_alleles

    assert match_position([("A", "C", "G")], [("A", "G", "C")]) == {0: [0]}  # same set
    assert match_position([("A", "C", "G")], [("A", "C")]) == {0: [0]}  # subset
    assert match_position([("A", "C")], [("A", "C", "G")]) == {0: [0]}  # new allele G
    assert match_position([("A", "C", "G")], [("A", "C", "T")]) == {0: [0]}  # overlap: new T
    assert match_position([("A", "C")], [("A", "G")]) == {0: [0]}  # disjoint: new allele G
    assert match_position([("A", "C")], [("AT", "C")]) == {}  # another REF
    # a record with a new ALT beside the one the site took: a split part of the site
    assert match_position([("A", "C")], [("A", "C"), ("A", "G")]) == {0: [0, 1]}
    assert match_position([("A", "C")], [("A", "C"), ("A", "C")]) == {0: [0]}  # a duplicate
    # split records merged when the store has the multi-allelic site
    assert match_position([("G", "T", "C")], [("G", "T"), ("G", "C")]) == {0: [0, 1]}
    # ... but each taken by its own store record when the store has them apart
    assert match_position([("G", "T"), ("G", "C")], [("G", "C"), ("G", "T")]) == {0: [1], 1: [0]}
    assert match_position([("G", "T", "C"), ("G", "A")],
                          [("G", "A"), ("G", "C"), ("G", "T")]) == {0: [1, 2], 1: [0]}
    assert merged_alleles([("G", "T"), ("G", "C"), ("G", "T", "A")]) == ("G", "T", "C", "A")


# ---------------------------------------------------------------------------------------------
# Ground truth, case by case
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["icechunk", "zarr2", "zarr3"])
def test_batch_lacks_variants(make_store, vcf_batch, tmp_path, kind):
    from vczstore_dagster.store import append_batch, check_batch
    from vczstore_dagster.store.plan import HARMONISATION_ATTR

    a = first_batch(vcf_batch)
    store = new_store(make_store, a, kind)
    chr2_first = next(i for i, s in enumerate(SITES) if s.contig == "chr2")
    lacking = {0, 7, 8, 9, 10, chr2_first - 1, chr2_first, NV - 1} | set(range(20, NV, 9))
    b = vcf_batch("S", 5, start=6, num_variants=NV,
                  sites=tuple(s for i, s in enumerate(SITES) if i not in lacking))
    out, converted = convert(store, b, tmp_path)
    h = converted.harmonisation
    assert (h.missing_filled, h.dropped, h.remapped, h.split_merged, h.num_new_alleles) == (
        len(lacking), 0, 0, 0, 0)
    assert site_name(SITES[0]) in h.examples["missing_filled"]
    assert zarr.open_group(str(out), mode="r").attrs[HARMONISATION_ATTR]["missing_filled"] == len(lacking)

    report = check_batch(store, out)
    assert report.ok, [f.message for f in report.errors]
    coverage = findings(report)["site_coverage"]
    assert coverage.severity == "warning" and str(NV - len(lacking)) in coverage.message
    assert report.plan.missing_filled == len(lacking)
    assert report.fast_path  # harmonised in the store's encoding and grid: chunks are copied

    # the filled sites are missing in every call_* field
    g = zarr.open_group(str(out), mode="r")
    offset = converted.sample_offset
    gt = g["call_genotype"][sorted(lacking)][:, offset:]
    assert (gt == -1).all() and g["call_genotype_mask"][sorted(lacking)][:, offset:].all()
    assert not g["call_genotype_phased"][sorted(lacking)][:, offset:].any()
    assert (g["call_DP"][sorted(lacking)][:, offset:] == -1).all()
    assert (g["call_AD"][sorted(lacking)][:, offset:, 0] == -1).all()
    gq = np.asarray(g["call_GQ"][sorted(lacking)][:, offset:])
    assert (gq.view(np.int32) == 0x7F800001).all()  # the VCF missing float
    assert (np.asarray(g["call_FT"][sorted(lacking)][:, offset:]) == ".").all()

    result = append_batch(store, out, batch_id="b1")
    assert result.fast_path and result.samples_after == 11
    assert_matches_merge(store, [a, b], tmp_path)


def test_batch_has_extra_variants(make_store, vcf_batch, tmp_path):
    from vczstore_dagster.store import append_batch, check_batch

    a = first_batch(vcf_batch)
    store = new_store(make_store, a)
    extra = list(testdata.make_sites(12, seed=99))  # other positions
    target = SITES[5]
    extra.append(dataclasses.replace(target, ref=target.ref + "A", id="."))  # same position, other REF
    b = vcf_batch("S", 5, start=6, num_variants=NV, sites=sorted_sites([*SITES, *extra]))
    out, converted = convert(store, b, tmp_path)
    h = converted.harmonisation
    assert (h.missing_filled, h.dropped, h.remapped, h.num_new_alleles) == (0, len(extra), 0, 0)
    assert converted.num_variants == NV
    report = check_batch(store, out)
    assert report.ok and findings(report)["dropped_records"].severity == "warning"
    append_batch(store, out, batch_id="b1")
    assert_matches_merge(store, [a, b], tmp_path)


def test_alt_order_swapped(make_store, vcf_batch, tmp_path):
    """Reversed ALT order at every multi-allelic site: GT, AD (R) and PL (G) remapped."""
    from vczstore_dagster.store import append_batch

    assert len(MULTI) >= 5
    a = first_batch(vcf_batch)
    store = new_store(make_store, a)
    swapped = tuple(dataclasses.replace(s, alts=s.alts[::-1]) if i in MULTI else s
                    for i, s in enumerate(SITES))
    # HQ (Number=.) cannot be remapped: this batch has none at all
    b = vcf_batch("S", 5, start=6, num_variants=NV, sites=swapped, max_hq=0)
    out, converted = convert(store, b, tmp_path)
    h = converted.harmonisation
    assert (h.missing_filled, h.dropped, h.remapped, h.split_merged) == (0, 0, len(MULTI), 0)
    append_batch(store, out, batch_id="b1")
    got = assert_matches_merge(store, [a, b], tmp_path)
    # the comparison covered remapped PL values (not only missing ones)
    multi_rows = [r for r in got.rows if "," in r[4]]
    assert any(d["PL"] != "." and d["GT"] not in ("./.",) for r in multi_rows
               for name, d in r[7].items() if name.startswith("S0000") and name >= "S00006")


def test_split_multiallelic_site(make_store, vcf_batch, tmp_path):
    from vczstore_dagster.store import append_batch

    a = first_batch(vcf_batch)
    store = new_store(make_store, a)
    b = vcf_batch("S", 5, start=6, num_variants=NV, sites=SITES, split_multiallelic=True)
    records = helpers.run(["bcftools", "view", "-H", b]).stdout.count("\n")
    assert records > NV  # really split
    out, converted = convert(store, b, tmp_path)
    h = converted.harmonisation
    assert (h.missing_filled, h.dropped, h.remapped, h.split_merged) == (0, 0, 0, len(MULTI))
    append_batch(store, out, batch_id="b1")
    assert_matches_merge(store, [a, b], tmp_path, split=(b,))


@pytest.mark.parametrize("kind", ["icechunk", "zarr3"])
def test_new_allele_refused_then_accepted(make_store, vcf_batch, tmp_path, kind):
    """One biallelic site gains an ALT; a site with the store's widest allele list gains one
    too (the alleles and genotypes dimensions widen). Refused by default, store unchanged; with
    the opt-in added in the append's commit; a later batch without them still appends."""
    from click.testing import CliRunner

    from vczstore_dagster.cli import cli
    from vczstore_dagster.store import (
        IncompatibleBatchError,
        append_batch,
        check_batch,
        convert_vcfs,
    )

    a = first_batch(vcf_batch)
    store = new_store(make_store, a, kind)
    width = store.readonly_group()["variant_allele"].shape[1]
    bi = next(i for i, s in enumerate(SITES) if len(s.alts) == 1 and len(s.ref) == 1)
    wide = next(i for i, s in enumerate(SITES) if len(s.alts) + 1 == width)
    grown_alts = {
        bi: (*SITES[bi].alts, next(x for x in "ACGT" if x != SITES[bi].ref and x not in SITES[bi].alts)),
        wide: (*SITES[wide].alts, SITES[wide].ref + "TT"),
    }
    sites = tuple(dataclasses.replace(s, alts=grown_alts[i]) if i in grown_alts else s
                  for i, s in enumerate(SITES))
    b = vcf_batch("S", 5, start=6, num_variants=NV, sites=sites)
    out, converted = convert(store, b, tmp_path)
    h = converted.harmonisation
    assert h.num_new_alleles == 2
    assert [(n.site, n.alleles) for n in h.new_alleles] == [
        (site_name(SITES[i]), [grown_alts[i][-1]]) for i in sorted(grown_alts)]

    before = helpers.store_digest(store)
    report = check_batch(store, out)
    new = findings(report)["new_alleles"]
    assert new.severity == "error" and site_name(SITES[min(grown_alts)]) in new.message
    with pytest.raises(IncompatibleBatchError) as err:
        append_batch(store, out, batch_id="b1")
    first = min(grown_alts)
    assert site_name(SITES[first]) in str(err.value) and grown_alts[first][-1] in str(err.value)
    helpers.assert_unchanged(before, helpers.store_digest(store), "store after a refused append")
    refused = CliRunner().invoke(cli, ["--no-progress", "append", store.url, str(out)])
    assert refused.exit_code == 1 and site_name(SITES[first]) in refused.output, refused.output
    helpers.assert_unchanged(before, helpers.store_digest(store), "store after a refused append")

    assert check_batch(store, out, allow_new_alleles=True).ok
    accepted = CliRunner().invoke(cli, ["--no-progress", "append", store.url, str(out),
                                        "--batch-id", "b1", "--allow-new-alleles"])
    assert accepted.exit_code == 0, accepted.output
    assert "samples 6 → 11" in accepted.output
    g = store.readonly_group()
    assert g["variant_allele"].shape[1] == width + 1
    assert g["call_PL"].shape[2] == (width + 1) * (width + 2) // 2
    assert_matches_merge(store, [a, b], tmp_path)

    c = vcf_batch("S", 3, start=11, num_variants=NV, sites=SITES)
    out_c = tmp_path / "c.vcz"
    converted_c = convert_vcfs([str(c)], str(out_c), like=store)
    assert converted_c.harmonisation.remapped == 2  # its sites lack the alleles added to the store
    result_c = append_batch(store, out_c, batch_id="b2")
    assert result_c.fast_path
    assert_matches_merge(store, [a, b, c], tmp_path)


def test_batch_that_cannot_be_harmonised_exactly(make_store, vcf_batch, tmp_path):
    """Swapped ALT order with HQ (Number=.) values at the site: refused naming field and site;
    the store is byte-for-byte unchanged and no batch is left behind."""
    from vczstore_dagster.store import (
        IncompatibleBatchError,
        InvalidInputError,
        append_batch,
        check_batch,
    )
    from vczstore_dagster.store.harmonise import harmonise_batch

    a = first_batch(vcf_batch)
    store = new_store(make_store, a)
    i = MULTI[0]
    sites = tuple(dataclasses.replace(s, alts=s.alts[::-1]) if k == i else s
                  for k, s in enumerate(SITES))
    b = vcf_batch("S", 5, start=6, num_variants=NV, sites=sites, max_hq=3)
    before = helpers.store_digest(store)
    out = tmp_path / "batch.vcz"
    with pytest.raises(InvalidInputError) as err:
        helpers.convert_like(store, [b], out)
    message = str(err.value)
    assert "call_HQ" in message and site_name(SITES[i]) in message, message
    assert not out.exists()
    helpers.assert_unchanged(before, helpers.store_digest(store))

    # the same batch converted without the store: check and append refuse it as it is
    plain = helpers.bio2zarr_convert([b], tmp_path / "plain.vcz", samples_chunk_size=SCHUNK,
                                     variants_chunk_size=VCHUNK)
    report = check_batch(store, plain)
    ids = findings(report)
    assert ids["variant_allele"].severity == "error"
    assert "1 sites with alleles in another order" in ids["harmonisation_needed"].message
    with pytest.raises(IncompatibleBatchError, match="variant_allele"):
        append_batch(store, plain, batch_id="b1")
    with pytest.raises(InvalidInputError, match="call_HQ"):
        harmonise_batch(store, plain, tmp_path / "harmonised.vcz")
    assert not (tmp_path / "harmonised.vcz").exists()
    helpers.assert_unchanged(before, helpers.store_digest(store))


def test_haploid_contig_keeps_fill(make_store, vcf_batch, tmp_path):
    """chr2 is haploid for the males: a chr2 site the batch lacks is [-1, -2] for a male and
    [-1, -1] for a female (the fill value, not missing, in the unused ploidy slot)."""
    from vczstore_dagster.store import append_batch

    haploid = dict(haploid_contigs=("chr2",), haploid_samples=("S00001", "S00003", "S00006",
                                                               "S00008"))
    a = first_batch(vcf_batch, **haploid)
    store = new_store(make_store, a)
    chr2 = [i for i, s in enumerate(SITES) if s.contig == "chr2"]
    lacking = {chr2[0], chr2[1], chr2[10], chr2[-1], 3}
    b = vcf_batch("S", 5, start=6, num_variants=NV,
                  sites=tuple(s for i, s in enumerate(SITES) if i not in lacking), **haploid)
    out, converted = convert(store, b, tmp_path)
    assert converted.harmonisation.missing_filled == len(lacking)
    g = zarr.open_group(str(out), mode="r")
    offset = converted.sample_offset
    ids = [str(x) for x in g["sample_id"][offset:]]
    gt = np.asarray(g["call_genotype"][...])[:, offset:]
    for v in sorted(lacking):
        for j, sample in enumerate(ids):
            male = sample in haploid["haploid_samples"] and SITES[v].contig == "chr2"
            assert list(gt[v, j]) == ([-1, -2] if male else [-1, -1]), (v, sample)
    append_batch(store, out, batch_id="b1")
    stored = np.asarray(store.readonly_group()["call_genotype"][...])
    columns = helpers.sample_ids(store)
    for v in sorted(lacking):  # the store keeps the fill, not only the staged batch
        for sample in ids:
            male = sample in haploid["haploid_samples"] and SITES[v].contig == "chr2"
            assert list(stored[v, columns.index(sample)]) == ([-1, -2] if male else [-1, -1])
    # ploidy compared: "." for the males' missing chr2 calls, "./." for everyone else's
    assert_matches_merge(store, [a, b], tmp_path,
                         haploid=(haploid["haploid_samples"], ("chr2",)))


@pytest.mark.parametrize("first_source", ["vcf", "vcz"])
def test_init_from_several_variant_sources(make_store, vcf_batch, tmp_path, first_source):
    """``init --variants A --variants B``: the union in genomic order, records merged as
    ``bcftools merge -m none`` merges them; batches on either variant set then append. The
    first source is a sites-only VCF, or a VCZ with samples (only its variants count)."""
    from vczstore_dagster.store import append_batch

    i_swap, i_grow = MULTI[0], next(i for i, s in enumerate(SITES) if len(s.alts) == 1)
    grow = SITES[i_grow]
    new_alt = next(x for x in "ACGT" if x != grow.ref and x not in grow.alts)
    sites_a = tuple(s for i, s in enumerate(SITES) if i % 4 != 1)
    extra = testdata.make_sites(6, seed=5)
    sites_b = sorted_sites([
        dataclasses.replace(s, alts=s.alts[::-1]) if i == i_swap
        else dataclasses.replace(s, alts=(*s.alts, new_alt)) if i == i_grow else s
        for i, s in enumerate(SITES) if i % 4 != 2] + list(extra))
    src_a, src_b = tmp_path / "a.vcf", tmp_path / "b.vcf"
    testdata.write_sites_vcf(src_a, sites=list(sites_a))
    testdata.write_sites_vcf(src_b, sites=list(sites_b))
    source_a = src_a
    if first_source == "vcz":
        source_a = helpers.bio2zarr_convert(
            [vcf_batch("Q", 3, num_variants=NV, sites=sites_a)], tmp_path / "a.vcz")
    store, _ = make_store("icechunk", None, variants=[source_a, src_b], samples_chunk_size=SCHUNK)

    union = helpers.parse_vcf_text(bcftools_merge_none(
        [helpers.bgzip_index(src_a), helpers.bgzip_index(src_b)], tmp_path))
    got = helpers.parse_vcf_text(helpers.store_vcf_text(store))
    assert [r[:7] for r in got.rows] == [r[:7] for r in union.rows]
    assert len(got.rows) == NV + len(extra)

    batch_a = vcf_batch("S", 5, num_variants=NV, sites=sites_a)
    batch_b = vcf_batch("S", 4, start=5, num_variants=NV, sites=tuple(sites_b))
    for name, vcf in (("ba", batch_a), ("bb", batch_b)):
        out, converted = convert(store, vcf, tmp_path, f"{name}.vcz")
        assert converted.harmonisation.missing_filled > 0 and not converted.harmonisation.new_alleles
        append_batch(store, out, batch_id=name)
    assert_matches_merge(store, [batch_a, batch_b], tmp_path)


def test_harmonise_batch_converted_without_the_store(make_store, vcf_batch, tmp_path):
    """A VCZ converted on its own (other chunk sizes, dtypes and trailing shapes) harmonised
    with ``harmonise_batch``: laid out on the store's grid in its encoding, then appended."""
    from vczstore_dagster.store import append_batch, check_batch, harmonise_batch

    a = first_batch(vcf_batch)
    store = new_store(make_store, a)
    sites = tuple(dataclasses.replace(s, alts=s.alts[::-1]) if i in MULTI else s
                  for i, s in enumerate(SITES) if i % 6)
    b = vcf_batch("S", 7, start=6, num_variants=NV, sites=sites, max_hq=0)
    plain = helpers.bio2zarr_convert([b], tmp_path / "plain.vcz", samples_chunk_size=3,
                                     variants_chunk_size=7)
    assert not check_batch(store, plain).ok
    out = tmp_path / "harmonised.vcz"
    report = harmonise_batch(store, plain, out)
    assert report.missing_filled == NV - len(sites) and report.remapped > 0
    assert (tmp_path / "plain.vcz").exists()  # the input is left as it was
    checked = check_batch(store, out)
    assert checked.ok and checked.fast_path, [f.message for f in checked.errors]
    append_batch(store, out, batch_id="b1")
    assert_matches_merge(store, [a, b], tmp_path)
