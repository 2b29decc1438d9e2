"""``vczstore view`` with bcftools' selections, at a release, against ``bcftools view`` of
``bcftools merge`` of the original VCFs; withdrawn samples are never shown.

One small store for the module: batch VA (10 samples) and batch VB (6), release ``rel-1``, then
VA00003 removed (after the release, before any purge: ``rel-1`` still holds its data).
"""

from __future__ import annotations

import dataclasses
import pathlib

import pytest
from click.testing import CliRunner

from vczstore_dagster.cli import cli
from vczstore_dagster.store import (
    append_batch,
    open_release,
    release_dataset,
    shown_samples,
    tag_release,
)
from vczstore_dagster.store.remove import remove_samples
from vczstore_dagster_tests import helpers

REMOVED = "VA00003"
RELEASE = "rel-1"


@dataclasses.dataclass
class Cohort:
    store: object
    url: str
    less_removed: pathlib.Path  # bcftools merge of the VCFs less REMOVED, bgzipped and indexed
    dir: pathlib.Path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, vcf_batch) -> Cohort:
    d = tmp_path_factory.mktemp("view")
    a, b = vcf_batch("VA", 10), vcf_batch("VB", 6)
    store, url = helpers.build_store("icechunk", [a], d, samples_chunk_size=8)
    helpers.convert_like(store, [b], d / "b.vcz")
    append_batch(store, str(d / "b.vcz"), batch_id="b")
    tag_release(store, RELEASE)
    remove_samples(store, [REMOVED])
    less = d / "less_removed.vcf.gz"
    helpers.run(["bcftools", "merge", "--no-version", "-Oz", "-o", less, a, b])
    helpers.run(["bcftools", "view", "--no-version", "--no-update", "-s", f"^{REMOVED}", "-Oz",
                 "-o", d / "tmp.vcf.gz", less])
    (d / "tmp.vcf.gz").replace(less)
    helpers.run(["bcftools", "index", "-f", less])
    return Cohort(store, url, less, d)


def view(cohort: Cohort, *args, ok: bool = True):
    result = CliRunner().invoke(cli, ["view", cohort.url, *map(str, args)])
    if ok:
        assert result.exit_code == 0, (result.stderr, result.exception)
    else:
        assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    return result


def assert_view_matches_bcftools(cohort: Cohort, *args, at: str | None = RELEASE,
                                 bcftools_args=None) -> helpers.VcfTable:
    """``vczstore view STORE ARGS --at AT`` equals ``bcftools view ARGS`` of the merge."""
    extra = ["--at", at] if at else []
    got = helpers.parse_vcf_text(view(cohort, *args, *extra).stdout)
    expected = helpers.parse_vcf_text(helpers.run(
        ["bcftools", "view", "--no-version", *(bcftools_args or args), cohort.less_removed]).stdout)
    assert expected.rows, "bcftools selected no record: the test's selection is wrong"
    problems = helpers.compare_tables(expected, got)
    assert not problems, "vczstore view differs from bcftools view:\n  " + "\n  ".join(problems)
    return got


def test_release_hides_a_sample_withdrawn_after_it(cohort):
    """rel-1 was tagged before the removal and still holds the sample until a purge."""
    assert REMOVED in helpers.sample_ids(cohort.store, at=RELEASE)
    table = assert_view_matches_bcftools(cohort)
    assert REMOVED not in table.samples and len(table.samples) == 15
    assert REMOVED not in view(cohort, "--at", RELEASE).stdout


def test_region_and_samples_at_a_release(cohort):
    table = assert_view_matches_bcftools(cohort, "-r", "chr1:2000000-7000000",
                                         "-s", "VB00002,VA00001,VA00009")
    assert table.samples == ["VB00002", "VA00001", "VA00009"]  # the order asked for
    assert 0 < len(table.rows) < 50


def test_samples_excluded_and_regions_file(cohort):
    regions = cohort.dir / "regions.tsv"
    regions.write_text("chr1\t1\t3000000\nchr2\t4000000\t8000000\n")
    table = assert_view_matches_bcftools(cohort, "-R", regions, "-s", "^VA00000,VB00005")
    assert len(table.samples) == 13 and {"VA00000", "VB00005", REMOVED}.isdisjoint(table.samples)
    assert {row[0] for row in table.rows} == {"chr1", "chr2"}
    names = cohort.dir / "samples.txt"
    names.write_text("VB00001\nVA00002\n")
    table = assert_view_matches_bcftools(cohort, "-S", names, "-t", "chr2")
    assert table.samples == ["VB00001", "VA00002"]


def test_include_and_exclude_filters(cohort):
    # at main (the sample removed): bcftools' semantics, the FORMAT filter over every sample
    assert_view_matches_bcftools(cohort, "-s", "VA00004,VB00000", "-i", "FMT/DP>55", at=None)
    assert_view_matches_bcftools(cohort, "-e", "QUAL<40 | POS>6000000")
    # at rel-1, which still holds the withdrawn sample: it takes no part in a FORMAT filter
    assert_view_matches_bcftools(cohort, "-i", "FMT/GQ>98")


@pytest.mark.parametrize(("args", "message"), [
    (["-s", f"VA00001,{REMOVED}"], f"not in the store at {RELEASE}: {REMOVED} (unknown, or "
                                   "withdrawn: withdrawn samples are never shown)"),
    (["-s", f"^{REMOVED}"], f"not in the store at {RELEASE}: {REMOVED}"),
    (["-s", "NOBODY"], f"not in the store at {RELEASE}: NOBODY"),
    (["-s", "VA00001,VA00001"], "named more than once: VA00001"),
    (["-r", "chr1", "-R", "regions.tsv"], "give -r/--regions or -R/--regions-file, not both"),
    (["-R", "bad_regions.tsv"], "bad_regions.tsv, line 2: expected CHROM<TAB>FROM<TAB>TO"),
    (["-S", "missing.txt"], "-S/--samples-file: cannot read"),
    (["-i", "FMT/NOPE>1"], "-i/--include:"),
])
def test_bad_selection_is_refused_and_shows_nothing(cohort, args, message):
    (cohort.dir / "bad_regions.tsv").write_text("chr1\t1\t100\nchr2 100 200\n")
    (cohort.dir / "regions.tsv").write_text("chr1\t1\t100\n")
    args = [str(cohort.dir / a) if a.endswith((".tsv", ".txt")) else a for a in args]
    before = helpers.store_digest(cohort.store)
    r = view(cohort, *args, "--at", RELEASE, ok=False)
    assert message in r.stderr, r.stderr
    assert r.stdout == ""
    helpers.assert_unchanged(before, helpers.store_digest(cohort.store))


def test_removed_sample_at_main_is_refused_too(cohort):
    r = view(cohort, "-s", REMOVED, ok=False)
    assert f"not in the store at main: {REMOVED}" in r.stderr and r.stdout == ""
    everyone = [s for s in helpers.sample_ids(cohort.store) if s]
    r = view(cohort, "-s", "^" + ",".join(everyone), ok=False)
    assert "no sample left to show" in r.stderr


def genotype_strings(ds) -> list[list[str]]:
    """call_genotype and call_genotype_phased of a Dataset as VCF GT strings (helpers' spelling)."""
    gt, phased = ds.call_genotype.values, ds.call_genotype_phased.values
    rows = []
    for v in range(gt.shape[0]):
        row = []
        for s in range(gt.shape[1]):
            alleles = ["." if a == -1 else str(a) for a in gt[v, s] if a != -2]
            row.append(helpers._norm_gt(("|" if phased[v, s] else "/").join(alleles)))
        rows.append(row)
    return rows


def test_release_opens_in_xarray_with_the_genotypes_of_view(cohort):
    import xarray as xr

    group = open_release(cohort.store, RELEASE)
    raw = xr.open_zarr(group.store, consolidated=False)
    assert raw.sizes["samples"] == 16 and REMOVED in raw.sample_id.values  # until a purge
    ds = release_dataset(cohort.store, RELEASE)
    assert ds.sizes["samples"] == 15
    assert ds.sample_id.equals(raw.isel(samples=shown_samples(cohort.store, group)).sample_id)

    table = helpers.parse_vcf_text(view(cohort, "--at", RELEASE).stdout)
    assert list(ds.sample_id.values) == table.samples
    contigs = ds.contig_id.values
    assert [(contigs[c], int(p)) for c, p in zip(ds.variant_contig.values,
                                                 ds.variant_position.values, strict=True)] == [
        (row[0], row[1]) for row in table.rows]
    assert genotype_strings(ds) == [[row[7][s]["GT"] for s in table.samples]
                                    for row in table.rows]

    head = release_dataset(cohort.store)  # main: the removed sample's slot is blank, and dropped
    assert head.sizes["samples"] == 15 and "" not in head.sample_id.values
