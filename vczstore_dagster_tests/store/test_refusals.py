"""Checks that cannot be fooled: a batch on another reference, another contig naming or another
allele coding is refused, not harmonised into missing data; smaller losses are warnings.

Every bad batch comes from the project's generator (a VCF text edit or an edited site list) and
goes through every path into the store: ``convert --like`` (refused, nothing written), a VCZ
converted elsewhere (``check``, ``append`` and ``convert VCZ --like``, i.e. ``harmonise_batch``),
and a batch harmonised without judging it, as the Dagster step stages it (``check``, ``append``).
The store's files are compared byte for byte before and after.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import types

import pytest
from click.testing import CliRunner

from vczstore_dagster import testdata
from vczstore_dagster.cli import cli
from vczstore_dagster_tests import helpers

NV = 100
VCHUNK = 50
SCHUNK = 8
SITES = tuple(testdata.make_sites(NV))


def run(*args):
    return CliRunner().invoke(cli, ["--no-progress", *map(str, args)])


@pytest.fixture(scope="module")
def base(vcf_batch, tmp_path_factory):
    work = tmp_path_factory.mktemp("refusals")
    first = vcf_batch("S", 12, num_variants=NV)
    _, url = helpers.build_store("icechunk", [first], work, samples_chunk_size=SCHUNK,
                                 variants_chunk_size=VCHUNK)
    return types.SimpleNamespace(url=url, first=first)


@pytest.fixture
def store(base, tmp_path):
    """A private copy of the base store."""
    from vczstore_dagster.store import open_store

    path = tmp_path / "store"
    shutil.copytree(base.url, path)
    return open_store(str(path))


def store_of(make_store, vcf_batch, edit):
    """A store of 12 samples whose first batch's VCF text went through ``edit``."""
    first = vcf_batch("S", 12, num_variants=NV, edit=edit)
    store, _ = make_store("icechunk", [first], samples_chunk_size=SCHUNK, variants_chunk_size=VCHUNK)
    return store, first


def records(edit_record):
    """A VCF text edit applying ``edit_record(columns) -> columns`` to every record."""
    def edit(text):
        out = []
        for line in text.splitlines(keepends=True):
            if not line.startswith("#"):
                line = "\t".join(edit_record(line.rstrip("\n").split("\t"))) + "\n"
            out.append(line)
        return "".join(out)
    return edit


def shifted(by, contigs=("chr1", "chr2")):
    return records(lambda c: [c[0], str(int(c[1]) + by), *c[2:]] if c[0] in contigs else c)


def renamed(mapping):
    def edit(text):
        for old, new in mapping.items():
            text = text.replace(f"##contig=<ID={old},", f"##contig=<ID={new},")
            text = re.sub(rf"^{old}\t", f"{new}\t", text, flags=re.M)
        return text
    return edit


def lengthened(contig, new_length):
    return lambda text: re.sub(rf"(##contig=<ID={contig},length=)\d+", rf"\g<1>{new_length}", text)


def assert_refused_everywhere(store, vcf, tmp_path, finding, *words, every_path=True):
    """Refused on every path (``every_path=False``: by ``convert --like``, and by ``check`` and
    ``append`` of a batch harmonised without judging it), the message naming ``words``; the store
    byte for byte unchanged."""
    from vczstore_dagster.store import convert_vcfs

    before = helpers.store_digest(store)
    out = tmp_path / "like.vcz"
    r = run("convert", vcf, out, "--like", store.url)
    assert r.exit_code == 1, r.output
    for w in words:
        assert re.search(w, r.stderr), f"{w!r} not in {r.stderr!r}"
    assert not out.exists()

    recorded = tmp_path / "recorded.vcz"  # harmonised, not judged: as the Dagster step stages it
    convert_vcfs([str(vcf)], str(recorded), like=store, thresholds=None)
    batches = [recorded]
    if every_path:
        batches.append(helpers.bio2zarr_convert([vcf], tmp_path / "plain.vcz",
                                                samples_chunk_size=SCHUNK, variants_chunk_size=VCHUNK))
    for batch in batches:
        r = run("check", store.url, batch)
        assert r.exit_code == 1, r.output
        rows = [line for line in r.stdout.splitlines() if re.match(rf"^error\s+{finding}\s", line)]
        assert rows, r.stdout
        for w in words:
            assert re.search(w, rows[0]), f"{w!r} not in {rows[0]!r}"
        r = run("append", store.url, batch, "--batch-id", "bad")
        assert r.exit_code == 1 and "refused" in r.stderr, r.output
        for w in words:
            assert re.search(w, r.stderr), f"{w!r} not in {r.stderr!r}"
    if every_path:
        r = run("convert", batches[1], tmp_path / "harmonised.vcz", "--like", store.url)
        assert r.exit_code == 1 and re.search(words[0], r.stderr), r.output
        assert not (tmp_path / "harmonised.vcz").exists()
    helpers.assert_unchanged(before, helpers.store_digest(store))


# ---------------------------------------------------------------------------------------------
# Another reference
# ---------------------------------------------------------------------------------------------


def test_positions_off_by_one(store, vcf_batch, tmp_path):
    vcf = vcf_batch("T", 5, start=100, num_variants=NV, edit=shifted(1))
    assert_refused_everywhere(store, vcf, tmp_path, "position_shift", r"shifted by one",
                              r"POS\+1", "chr1", "chr2")


@pytest.mark.parametrize("by, contigs", [(-1, ("chr1", "chr2")), (1, ("chr2",)), (-1, ("chr1",))])
def test_positions_shifted_either_way_on_any_contig(store, vcf_batch, tmp_path, by, contigs):
    from vczstore_dagster.store import check_batch, convert_vcfs

    vcf = vcf_batch("T", 5, start=100, num_variants=NV, edit=shifted(by, contigs))
    out = tmp_path / "recorded.vcz"
    plan = convert_vcfs([str(vcf)], str(out), like=store, thresholds=None).harmonisation
    assert plan.shifts == {c: by for c in contigs}
    report = check_batch(store, out)
    shift = next(f for f in report.errors if f.id == "position_shift")
    assert f"POS{by:+d}" in shift.message and all(c in shift.message for c in contigs)
    r = run("convert", vcf, tmp_path / "like.vcz", "--like", store.url)
    assert r.exit_code == 1 and "shifted by one" in r.stderr, r.output


@pytest.mark.parametrize("store_names, batch_names", [
    ({}, {"chr1": "1", "chr2": "2"}),  # the store says chr1, the batch 1
    ({"chr1": "1", "chr2": "2"}, {}),  # the store says 1, the batch chr1
    ({"chr2": "chrM"}, {"chr2": "MT"}),
    ({"chr2": "MT"}, {"chr2": "M"}),
])
def test_contig_named_another_way(make_store, vcf_batch, tmp_path, store_names, batch_names):
    store, _ = store_of(make_store, vcf_batch, renamed(store_names))
    vcf = vcf_batch("T", 5, start=100, num_variants=NV, edit=renamed(batch_names))
    pairs = [(store_names.get(c, c), batch_names.get(c, c)) for c in {**store_names, **batch_names}]
    words = [re.escape(w) for pair in pairs for w in pair]
    assert_refused_everywhere(store, vcf, tmp_path, "contig_naming", "another way", *words,
                              every_path=not store_names)


def test_contig_of_another_length(store, vcf_batch, tmp_path):
    vcf = vcf_batch("T", 5, start=100, num_variants=NV, edit=lengthened("chr2", 8_000_321))
    assert_refused_everywhere(store, vcf, tmp_path, "contig_length", "chr2", "8,000,000",
                              "8,000,321", "reference build")


def test_contig_lengths_unknown_are_not_compared(make_store, vcf_batch, tmp_path):
    """A store whose VCF header gave no lengths keeps none (bio2zarr writes no contig_length):
    nothing to compare, the batch appends."""
    from vczstore_dagster.store import check_batch

    no_lengths = lambda text: re.sub(r",length=\d+", "", text)  # noqa: E731
    store, _ = store_of(make_store, vcf_batch, no_lengths)
    assert "contig_length" not in store.readonly_group()
    out = tmp_path / "b.vcz"
    helpers.convert_like(store, [vcf_batch("T", 5, start=100, num_variants=NV)], out)
    assert check_batch(store, out).ok


# ---------------------------------------------------------------------------------------------
# New alleles: an ALT the store's site does not have
# ---------------------------------------------------------------------------------------------


def _other_base(site):
    return next(b for b in "ACGT" if b != site.ref and b not in site.alts)


@pytest.mark.parametrize("kind", ["biallelic", "multiallelic"])
def test_disjoint_alt_is_a_new_allele(store, base, vcf_batch, tmp_path, kind):
    """Store 19:112 A>G, batch 19:112 A>T: not dropped, a new allele; refused by default,
    added with --allow-new-alleles, and the store then equals bcftools merge."""
    from vczstore_dagster.store import check_batch

    i = next(i for i, s in enumerate(SITES) if len(s.ref) == 1 and all(len(a) == 1 for a in s.alts)
             and len(s.alts) == (1 if kind == "biallelic" else 2))
    site = SITES[i]
    new = _other_base(site)
    sites = tuple(dataclasses.replace(s, alts=(new,)) if k == i else s for k, s in enumerate(SITES))
    # HQ (Number=.) has no per-allele layout: a remapped site can only take it empty
    vcf = vcf_batch("T", 5, start=100, num_variants=NV, sites=sites, max_hq=0)
    out = tmp_path / "b.vcz"
    r = run("convert", vcf, out, "--like", store.url)
    assert r.exit_code == 0 and "new ALT allele" in r.stderr, r.output
    before = helpers.store_digest(store)
    r = run("check", store.url, out)
    assert r.exit_code == 1, r.output
    row = next(line for line in r.stdout.splitlines() if line.startswith("error"))
    assert "new_alleles" in row and f"{site.contig}:{site.position}" in row and new in row, row
    r = run("append", store.url, out)
    assert r.exit_code == 1 and f"{site.contig}:{site.position}" in r.stderr, r.output
    helpers.assert_unchanged(before, helpers.store_digest(store))
    assert check_batch(store, out, allow_new_alleles=True).ok
    assert run("check", store.url, out, "--allow-new-alleles").exit_code == 0

    r = run("append", store.url, out, "--allow-new-alleles")
    assert r.exit_code == 0, r.output
    alleles = [str(a) for a in store.readonly_group()["variant_allele"][i] if str(a)]
    assert alleles == [site.ref, *site.alts, new]
    helpers.assert_matches_bcftools(store, [base.first, vcf], cli=False)


def test_extra_record_with_a_new_alt_at_a_taken_site(store, vcf_batch, tmp_path):
    """The batch has the store's A>G and a separate A>T at the same position (split records):
    T is a new allele of that site, not a dropped record."""
    import zarr

    from vczstore_dagster.store.planner import plan_variants

    i = next(i for i, s in enumerate(SITES) if len(s.alts) == 1 and len(s.ref) == 1)
    extra = dataclasses.replace(SITES[i], alts=(_other_base(SITES[i]),), id=".")
    vcf = vcf_batch("T", 5, start=100, num_variants=NV, sites=(*SITES[: i + 1], extra,
                                                               *SITES[i + 1 :]))
    plain = helpers.bio2zarr_convert([vcf], tmp_path / "plain.vcz", samples_chunk_size=SCHUNK)
    plan = plan_variants(store.readonly_group(), zarr.open_group(str(plain), mode="r"))
    assert (plan.dropped, plan.num_new_alleles, plan.split_merged) == (0, 1, 1)
    assert plan.new_alleles[0].alleles == [extra.alts[0]]
    r = run("check", store.url, plain)
    assert r.exit_code == 1 and re.search(r"^error\s+new_alleles\s", r.stdout, re.M), r.stdout


def test_make_dev_extra_alleles_batch_is_refused_for_its_new_alleles(store, tmp_path):
    from vczstore_dagster.dev import sites_with_extra_alleles

    vcf = testdata.write_vcf(tmp_path / "x.vcf", testdata.sample_names("X", 4),
                             sites=sites_with_extra_alleles(num_variants=NV))
    out = tmp_path / "x.vcz"
    assert run("convert", vcf, out, "--like", store.url).exit_code == 0
    r = run("check", store.url, out)
    assert r.exit_code == 1
    errors = [line for line in r.stdout.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "new_alleles" in errors[0] and "--allow-new-alleles" in errors[0]


# ---------------------------------------------------------------------------------------------
# Coverage: thresholds, warnings, figures
# ---------------------------------------------------------------------------------------------


def _keeping(n):
    """``n`` of the shared sites, spread over both contigs."""
    keep = set(sorted(range(NV), key=lambda k: (k * 37) % NV)[:n])
    return [s for k, s in enumerate(SITES) if k in keep]


@pytest.mark.parametrize("kept, verdicts", [
    # (threshold given, refused): the default 0.5 refuses coverage below it, not at it
    (49, [(None, True), ("0.49", False), ("0", False)]),
    (50, [(None, False), ("0.51", True)]),
    (85, [("0.9", True), ("0.85", False), (None, False)]),
    (99, [("1", True), ("0.99", False)]),
])
def test_site_coverage_threshold(store, vcf_batch, tmp_path, kept, verdicts):
    from vczstore_dagster.store import convert_vcfs

    vcf = vcf_batch("T", 5, start=100, num_variants=NV, sites=tuple(_keeping(kept)))
    out = tmp_path / "recorded.vcz"
    plan = convert_vcfs([str(vcf)], str(out), like=store, thresholds=None).harmonisation
    assert (plan.covered, plan.store_sites, plan.dropped) == (kept, NV, 0)
    for threshold, refused in verdicts:
        args = ("--min-site-coverage", threshold) if threshold else ()
        r = run("check", store.url, out, *args)
        assert r.exit_code == (1 if refused else 0), (threshold, r.output)
        row = next(line for line in r.stdout.splitlines() if "site_coverage" in line)
        severity = "error" if refused else "warning" if kept < 99 else "info"  # warned below 99%
        assert row.split()[0] == severity, (threshold, row)
        assert f"covers {kept} of the store's {NV} sites" in row, row
    threshold, refused = verdicts[0]
    args = ("--min-site-coverage", threshold) if threshold else ()
    like = run("convert", vcf, tmp_path / "like.vcz", "--like", store.url, *args)
    assert like.exit_code == (1 if refused else 0), like.output
    if refused:
        assert "--min-site-coverage" in like.stderr and f"{kept}.0%" in like.stderr


def test_append_threshold_overrides_the_default(store, vcf_batch, tmp_path):
    from vczstore_dagster.store import convert_vcfs

    vcf = vcf_batch("T", 5, start=100, num_variants=NV, sites=tuple(_keeping(40)))
    out = tmp_path / "recorded.vcz"
    convert_vcfs([str(vcf)], str(out), like=store, thresholds=None)
    before = helpers.store_digest(store)
    r = run("append", store.url, out)
    assert r.exit_code == 1 and "covers 40" in r.stderr and "--min-site-coverage" in r.stderr
    helpers.assert_unchanged(before, helpers.store_digest(store))
    r = run("append", store.url, out, "--min-site-coverage", "0.4")
    assert r.exit_code == 0 and "warning: batch recorded.vcz covers 40" in r.stderr, r.output


@pytest.mark.parametrize("extra, verdicts", [
    (60, [(None, False), ("0.37", True), ("0.38", False)]),  # 60 of 160: 37.5%
    (110, [(None, True), ("0.6", False)]),
    (5, [("0", True), (None, False)]),
])
def test_dropped_records_threshold(store, vcf_batch, tmp_path, extra, verdicts):
    from vczstore_dagster.store import convert_vcfs

    taken = {(s.contig, s.position) for s in SITES}
    others = [s for s in testdata.make_sites(3 * extra, seed=5) if (s.contig, s.position) not in taken]
    order = list(testdata.CONTIGS)
    sites = tuple(sorted([*SITES, *others[:extra]], key=lambda s: (order.index(s.contig), s.position)))
    vcf = vcf_batch("T", 5, start=100, num_variants=NV, sites=sites)
    out = tmp_path / "recorded.vcz"
    plan = convert_vcfs([str(vcf)], str(out), like=store, thresholds=None).harmonisation
    assert (plan.dropped, plan.batch_records, plan.site_coverage) == (extra, NV + extra, 1.0)
    for threshold, refused in verdicts:
        args = ("--max-dropped-fraction", threshold) if threshold else ()
        r = run("check", store.url, out, *args)
        assert r.exit_code == (1 if refused else 0), (threshold, r.output)
        row = next(line for line in r.stdout.splitlines() if "dropped_records" in line)
        assert row.split()[0] == ("error" if refused else "warning"), (threshold, row)
        assert f"{extra} of its {NV + extra} records" in row


def test_batch_lacking_a_tenth_of_the_sites_appends_with_a_warning(store, base, vcf_batch,
                                                                   tmp_path):
    vcf = vcf_batch("T", 5, start=100, num_variants=NV, sites=tuple(_keeping(90)))
    out = tmp_path / "b.vcz"
    r = run("convert", vcf, out, "--like", store.url)
    assert r.exit_code == 0 and "warning: batch b.vcz covers 90 of the store's 100 sites (90.0%)" \
        in r.stderr, r.output
    r = run("check", store.url, out)
    assert r.exit_code == 0, r.output
    assert re.search(r"^warning\s+site_coverage\s+batch b.vcz covers 90 .*first at chr", r.stdout,
                     re.M), r.stdout
    table = r.stdout.split("\n\n")[0].splitlines()
    assert table[0].split()[:2] == ["CONTIG", "STORE"]
    assert table[-1].split()[:4] == ["all", "100", "90", "90.0%"]
    r = run("append", store.url, out)
    assert r.exit_code == 0 and "warning: batch b.vcz covers 90" in r.stderr, r.output
    helpers.assert_matches_bcftools(store, [base.first, vcf], cli=False)


def test_coverage_figures_per_contig(store, vcf_batch, tmp_path):
    """chr2 entirely missing: the overall coverage passes; the per-contig figures show it."""
    from vczstore_dagster.store import check_batch, convert_vcfs

    chr1 = [s for s in SITES if s.contig == "chr1"]
    vcf = vcf_batch("T", 5, start=100, num_variants=NV, sites=tuple(chr1))
    out = tmp_path / "b.vcz"
    convert_vcfs([str(vcf)], str(out), like=store, thresholds=None)
    report = check_batch(store, out)
    assert report.plan.contigs["chr2"].covered == 0
    assert report.plan.contigs["chr1"].site_coverage == 1.0
    coverage = next(f for f in report.findings if f.id == "site_coverage")
    assert coverage.severity == "warning" and "chr2 0/50" in coverage.message


# ---------------------------------------------------------------------------------------------
# INFO fields never block a batch
# ---------------------------------------------------------------------------------------------


def test_bcftools_merged_batch_converts(store, base, vcf_batch, tmp_path):
    """bcftools merge of two batches, one with an extra FILTER definition: the merged header has
    three filters where the store has two (before: "could not broadcast input array from shape
    (3,) into shape (2,)", naming no field)."""
    one = vcf_batch("T", 3, start=100, num_variants=NV)
    two = vcf_batch("U", 3, num_variants=NV, edit=lambda t: t.replace(
        "##FILTER=<ID=LowQual", '##FILTER=<ID=Other,Description="x">\n##FILTER=<ID=LowQual'))
    merged = tmp_path / "merged.vcf.gz"
    helpers.run(["bcftools", "merge", "--no-version", "-Oz", "-o", merged, one, two])
    helpers.run(["bcftools", "index", "-f", merged])
    out = tmp_path / "merged.vcz"
    r = run("convert", merged, out, "--like", store.url)
    assert r.exit_code == 0, r.output
    assert run("append", store.url, out).exit_code == 0
    helpers.assert_matches_bcftools(store, [base.first, merged], cli=False)


def test_info_field_with_more_values_than_the_store_holds(make_store, vcf_batch, tmp_path):
    """An INFO field of Number=. with more values in the batch than in the store's first batch."""
    def number_dot(extra):
        def edit(text):
            text = text.replace("##INFO=<ID=AC,Number=A", "##INFO=<ID=AC,Number=.")
            return re.sub(r"AC=([0-9,]+)", r"AC=\1,7,7", text) if extra else text
        return edit
    store, first = store_of(make_store, vcf_batch, number_dot(False))
    vcf = vcf_batch("T", 5, start=100, num_variants=NV, edit=number_dot(True))
    out = tmp_path / "b.vcz"
    r = run("convert", vcf, out, "--like", store.url)
    assert r.exit_code == 0, r.output
    assert run("append", store.url, out).exit_code == 0
    helpers.assert_matches_bcftools(store, [first, vcf], cli=False)


def test_refused_conversion_names_the_field(store, vcf_batch, tmp_path):
    vcf = vcf_batch("T", 5, start=100, num_variants=NV, max_hq=6)
    r = run("convert", vcf, tmp_path / "b.vcz", "--like", store.url)
    assert r.exit_code == 1 and "field call_HQ" in r.stderr, r.output


# ---------------------------------------------------------------------------------------------
# init --variants from several sources on different references
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("edit, words", [
    (renamed({"chr1": "1", "chr2": "2"}), ["name contigs differently", "1 in b.vcf is chr1"]),
    (lengthened("chr1", 9_999_999), ["reference builds", "chr1", "10,000,000", "9,999,999"]),
    (shifted(-1), ["shifted by one", r"POS-1"]),
])
def test_init_from_sources_on_different_references(tmp_path, edit, words):
    a, b = tmp_path / "a.vcf", tmp_path / "b.vcf"
    testdata.write_sites_vcf(a, num_variants=NV)
    testdata.write_sites_vcf(b, num_variants=NV)
    b.write_text(edit(b.read_text()))
    r = run("init", tmp_path / "store", "--variants", a, "--variants", b)
    assert r.exit_code == 1, r.output
    for w in ["a.vcf", "b.vcf", *words]:
        assert re.search(w, r.stderr), (w, r.stderr)
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())
