"""Every bad input has a test: the error names the problem and the store is byte-for-byte unchanged.

The bad batches are made from generated VCFs (another variant set, another contig, haploid calls,
larger values) converted with plain bio2zarr or the engine, or from a good batch whose copy is
edited with zarr (one allele, one position, a missing or extra field, sample ids).
"""

from __future__ import annotations

import re
import shutil
import types

import numpy as np
import pytest
import zarr

from vczstore_dagster_tests import helpers

NV = 120
VCHUNK = 50
SCHUNK = 8


@pytest.fixture(scope="module")
def base(vcf_batch, tmp_path_factory):
    """A local Icechunk store of 12 samples, a good next batch (engine-converted --like the
    store, laid out on its grid), and the same batch converted with plain bio2zarr."""
    work = tmp_path_factory.mktemp("bad_input")
    first = vcf_batch("S", 12, num_variants=NV)
    store, url = helpers.build_store("icechunk", [first], work, samples_chunk_size=SCHUNK,
                                     variants_chunk_size=VCHUNK)
    good_vcf = vcf_batch("S", 6, start=12, num_variants=NV)
    good = work / "good.vcz"
    helpers.convert_like(store, [good_vcf], good)
    plain = helpers.bio2zarr_convert([good_vcf], work / "plain.vcz", samples_chunk_size=SCHUNK,
                                     variants_chunk_size=VCHUNK)
    return types.SimpleNamespace(url=url, first=first, good_vcf=good_vcf, good=good, plain=plain,
                                 work=work)


@pytest.fixture
def store(base, tmp_path):
    """A private copy of the base store (a bug that writes cannot leak into other tests)."""
    from vczstore_dagster.store import open_store

    path = tmp_path / "store"
    shutil.copytree(base.url, path)
    return open_store(str(path))


def copy_batch(src, tmp_path, name="bad.vcz"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def edit_group(path):
    """Open a batch copy for editing (metadata is re-consolidated by :func:`done_editing`)."""
    return zarr.open_group(str(path), mode="r+", use_consolidated=False)


def done_editing(path):
    zarr.consolidate_metadata(str(path))


def assert_refused(store, batch, finding_id, *words, severity="error"):
    """``check`` reports ``finding_id`` naming ``words``; ``append`` refuses with a message naming
    them; the store's bytes are untouched by either."""
    from vczstore_dagster.store import IncompatibleBatchError, append_batch, check_batch

    before = helpers.store_digest(store)
    report = check_batch(store, batch)
    found = [f for f in report.findings
             if f.id == finding_id and all(re.search(w, f.message) for w in words)]
    assert found, (f"no {finding_id} finding naming {words}; got "
                   f"{[(f.id, f.severity, f.message) for f in report.findings]}")
    finding = found[0]
    assert finding.severity == severity, finding
    assert not report.ok
    helpers.assert_unchanged(before, helpers.store_digest(store), "store after check")

    with pytest.raises(IncompatibleBatchError) as err:
        append_batch(store, batch, batch_id="bad")
    for w in words:
        assert re.search(w, str(err.value)), f"{w!r} not in error {str(err.value)!r}"
    assert err.value.report is not None
    assert finding_id in {f.id for f in err.value.report.errors}
    helpers.assert_unchanged(before, helpers.store_digest(store), "store after refused append")
    return finding


def test_good_batch_passes(store, base):
    """The control: the unedited batch is compatible and takes the fast path."""
    from vczstore_dagster.store import check_batch

    report = check_batch(store, base.good)
    assert report.ok, [f.message for f in report.errors]
    assert report.fast_path
    assert report.num_samples == 6
    assert {f.id for f in report.findings} == {"fast_path", "site_coverage", "dropped_records"}
    assert {f.severity for f in report.findings} == {"info"}
    assert (report.plan.site_coverage, report.plan.dropped_fraction) == (1.0, 0.0)


def test_variant_count_differs(store, base, vcf_batch, tmp_path):
    vcf = vcf_batch("S", 6, start=12, num_variants=NV + 10)
    batch = helpers.bio2zarr_convert([vcf], tmp_path / "more.vcz", samples_chunk_size=SCHUNK,
                                     variants_chunk_size=VCHUNK)
    assert_refused(store, batch, "variant_count", str(NV + 10), str(NV))


def test_one_allele_differs(store, base, tmp_path):
    batch = copy_batch(base.good, tmp_path)
    g = edit_group(batch)
    alleles = [str(a) for a in g["variant_allele"][37]]
    new_alt = next(b for b in "ACGT" if b not in alleles)
    edited = np.array(alleles, dtype=object)
    edited[1] = new_alt
    g["variant_allele"][37] = edited
    contig = str(g["contig_id"][int(g["variant_contig"][37])])
    pos = int(g["variant_position"][37])
    done_editing(batch)
    assert_refused(store, batch, "variant_allele", "variant_allele", f"{contig}:{pos}")


def test_positions_differ(store, base, tmp_path):
    batch = copy_batch(base.good, tmp_path)
    g = edit_group(batch)
    pos = int(g["variant_position"][60])
    g["variant_position"][60] = pos + 1
    done_editing(batch)
    assert_refused(store, batch, "variant_position", "variant_position", str(pos), str(pos + 1))


def test_contig_set_differs(store, base, vcf_batch, tmp_path):
    vcf = vcf_batch("S", 6, start=12, num_variants=NV,
                    edit=lambda text: text.replace("chr2", "chr7"))
    batch = helpers.bio2zarr_convert([vcf], tmp_path / "contigs.vcz", samples_chunk_size=SCHUNK,
                                     variants_chunk_size=VCHUNK)
    assert_refused(store, batch, "contig_id", "contig", "chr7", "chr2")


def test_call_field_missing(store, base, tmp_path):
    batch = copy_batch(base.good, tmp_path)
    g = edit_group(batch)
    del g["call_HQ"]
    done_editing(batch)
    assert "call_HQ" not in zarr.open_group(str(batch), mode="r")
    assert_refused(store, batch, "field_missing", "call_HQ")


def test_extra_field_warns_and_append_goes_on(store, base, tmp_path):
    from vczstore_dagster.store import append_batch, check_batch

    batch = copy_batch(base.good, tmp_path)
    g = edit_group(batch)
    dp = g["call_DP"]
    extra = g.create_array("call_XQ", shape=dp.shape, chunks=dp.chunks, dtype=dp.dtype,
                           fill_value=-2, dimension_names=["variants", "samples"],
                           attributes={"description": "an extra field"})
    extra[...] = dp[...]
    done_editing(batch)

    report = check_batch(store, batch)
    warnings = [f for f in report.findings if f.id == "field_extra"]
    assert warnings and warnings[0].severity == "warning", report.findings
    assert "call_XQ" in warnings[0].message
    assert report.ok
    result = append_batch(store, batch, batch_id="extra")
    assert result.samples_after == 18
    assert any(f.id == "field_extra" for f in result.findings)
    group = store.readonly_group()
    assert "call_XQ" not in group
    helpers.assert_matches_bcftools(store, [base.first, base.good_vcf])


def _haploid(text: str) -> str:
    """Every call haploid (the first allele of each diploid call)."""
    lines = []
    for line in text.splitlines(keepends=True):
        if line.startswith("#"):
            lines.append(line)
            continue
        cols = line.rstrip("\n").split("\t")
        for i in range(9, len(cols)):
            cell = cols[i].split(":")
            cell[0] = re.split(r"[/|]", cell[0])[0]
            if len(cell) > 4:
                cell[4] = "."  # PL (Number=G) has fewer values for a haploid call
            cols[i] = ":".join(cell)
        lines.append("\t".join(cols) + "\n")
    return "".join(lines)


def _one_triploid(text: str) -> str:
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if not line.startswith("#"):
            cols = line.rstrip("\n").split("\t")
            cell = cols[9].split(":")
            cell[0] = "0/1/1"
            cols[9] = ":".join(cell)
            lines[i] = "\t".join(cols) + "\n"
            break
    return "".join(lines)


def test_different_ploidy(store, base, vcf_batch, tmp_path):
    vcf = vcf_batch("S", 6, start=12, num_variants=NV, edit=_haploid)
    batch = helpers.bio2zarr_convert([vcf], tmp_path / "haploid.vcz", samples_chunk_size=SCHUNK,
                                     variants_chunk_size=VCHUNK)
    assert zarr.open_group(str(batch), mode="r")["call_genotype"].shape[2] == 1
    assert_refused(store, batch, "field_shape", "call_genotype", "ploidy")


def test_convert_like_refuses_a_higher_ploidy(store, base, vcf_batch, tmp_path):
    """A triploid call cannot be squeezed into a diploid store: convert names the field."""
    from vczstore_dagster.store import VczStoreError

    vcf = vcf_batch("S", 6, start=12, num_variants=NV, edit=_one_triploid)
    before = helpers.store_digest(store)
    with pytest.raises(VczStoreError) as err:
        helpers.convert_like(store, [vcf], tmp_path / "triploid.vcz")
    # the cause is the ploidy of call_genotype (PL's genotypes dimension only follows from it)
    assert "call_genotype" in str(err.value) and "ploidy" in str(err.value), str(err.value)
    helpers.assert_unchanged(before, helpers.store_digest(store))


def test_value_overflowing_the_store_dtype(store, base, vcf_batch, tmp_path):
    """call_DP is int8 in the store (depths < 60); a batch with depths up to 999 cannot be
    converted --like the store, and a batch converted without --like is refused by check."""
    from vczstore_dagster.store import VczStoreError

    assert np.dtype(store.readonly_group()["call_DP"].dtype) == np.int8
    vcf = vcf_batch("S", 6, start=12, num_variants=NV, dp_max=1000)
    before = helpers.store_digest(store)
    with pytest.raises(VczStoreError, match="call_DP") as err:
        helpers.convert_like(store, [vcf], tmp_path / "deep.vcz")
    assert "int8" in str(err.value) or "i1" in str(err.value), str(err.value)
    helpers.assert_unchanged(before, helpers.store_digest(store))

    batch = helpers.bio2zarr_convert([vcf], tmp_path / "deep-plain.vcz",
                                     samples_chunk_size=SCHUNK, variants_chunk_size=VCHUNK)
    assert np.dtype(zarr.open_group(str(batch), mode="r")["call_DP"].dtype) == np.int16
    assert_refused(store, batch, "field_dtype", "call_DP")


def _edit_sample_ids(path, edit):
    g = edit_group(path)
    ids = np.asarray(g["sample_id"][...]).astype(object)
    g["sample_id"][...] = edit(ids)
    done_editing(path)


def test_duplicate_sample_within_batch(store, base, tmp_path):
    batch = copy_batch(base.plain, tmp_path)

    def dup(ids):
        ids[3] = ids[1]
        return ids

    _edit_sample_ids(batch, dup)
    assert_refused(store, batch, "sample_id_duplicate", "S00013")


def test_sample_already_in_store(store, base, vcf_batch, tmp_path):
    vcf = vcf_batch(samples=["S00012", "S00013", "S00005", "S00014"], num_variants=NV)
    batch = tmp_path / "again.vcz"
    helpers.convert_like(store, [vcf], batch)
    assert_refused(store, batch, "sample_id_in_store", "S00005")


def test_empty_sample_id(store, base, tmp_path):
    batch = copy_batch(base.plain, tmp_path)

    def empty(ids):
        ids[2] = ""
        return ids

    _edit_sample_ids(batch, empty)
    assert_refused(store, batch, "sample_id_empty", "empty")


@pytest.mark.parametrize("kind", ["empty_dir", "files", "zarr_not_vcz", "vcf_file"])
def test_batch_that_is_not_a_vcz(store, base, tmp_path, kind):
    from vczstore_dagster.store import InvalidInputError, append_batch, check_batch

    path = tmp_path / "notvcz"
    if kind == "empty_dir":
        path.mkdir()
    elif kind == "files":
        path.mkdir()
        (path / "README.txt").write_text("not a VCZ\n")
        (path / "data.csv").write_text("a,b\n1,2\n")
    elif kind == "zarr_not_vcz":
        g = zarr.open_group(str(path), mode="w", zarr_format=3)
        g.create_array("temperature", shape=(4,), dtype="f4")
    else:
        path = base.good_vcf
    before = helpers.store_digest(store)
    for op in (lambda: check_batch(store, path), lambda: append_batch(store, path, batch_id="x")):
        with pytest.raises(InvalidInputError) as err:
            op()
        message = str(err.value)
        expected = {"empty_dir": "not a VCZ (no zarr.json or .zgroup at its root)",
                    "files": "not a VCZ (no zarr.json or .zgroup at its root)",
                    "zarr_not_vcz": "not a VCZ (missing ",
                    "vcf_file": "not a VCZ directory (convert VCF files first)"}[kind]
        assert message.startswith(f"batch {path}: {expected}"), message
    helpers.assert_unchanged(before, helpers.store_digest(store))


@pytest.mark.parametrize("which", ["zarr.json", "call_DP/zarr.json"])
def test_batch_with_corrupt_zarr_json(store, base, tmp_path, which):
    from vczstore_dagster.store import InvalidInputError, append_batch, check_batch

    batch = copy_batch(base.good, tmp_path)
    meta = batch / which
    text = meta.read_text()
    meta.write_text(text[: len(text) // 2])  # truncated mid-JSON
    before = helpers.store_digest(store)
    for op in (lambda: check_batch(store, batch),
               lambda: append_batch(store, batch, batch_id="x")):
        with pytest.raises(InvalidInputError) as err:
            op()
        assert "zarr.json" in str(err.value), str(err.value)
        if which.startswith("call_DP"):
            assert "call_DP" in str(err.value), str(err.value)
    helpers.assert_unchanged(before, helpers.store_digest(store))


def test_same_batch_id_twice(store, base):
    from vczstore_dagster.store import IncompatibleBatchError, append_batch

    append_batch(store, base.good, batch_id="twice")
    before = helpers.store_digest(store)
    with pytest.raises(IncompatibleBatchError, match="twice"):
        append_batch(store, base.good, batch_id="twice")
    helpers.assert_unchanged(before, helpers.store_digest(store))


@pytest.mark.parametrize("kind", ["s3", "zarr2", "zarr3"])
def test_refused_append_leaves_other_backends_unchanged(make_store, vcf_batch, tmp_path, request,
                                                         kind):
    """The same refusal on S3 (every object compared) and on plain Zarr (no transactions)."""
    from vczstore_dagster.store import IncompatibleBatchError, append_batch, check_batch

    store, url = make_store(kind, [vcf_batch("S", 12, num_variants=NV)],
                            samples_chunk_size=SCHUNK, variants_chunk_size=VCHUNK)
    moto = request.getfixturevalue("moto_s3") if kind == "s3" else None
    again = vcf_batch(samples=["S00012", "S00003"], num_variants=NV)
    batch = helpers.bio2zarr_convert([again], tmp_path / "again.vcz", samples_chunk_size=SCHUNK,
                                     variants_chunk_size=VCHUNK,
                                     zarr_format=2 if kind == "zarr2" else 3)
    before = helpers.store_digest(store, moto)
    assert before
    report = check_batch(store, batch)
    assert any(f.id == "sample_id_in_store" and "S00003" in f.message for f in report.errors), \
        report.findings
    with pytest.raises(IncompatibleBatchError, match="S00003"):
        append_batch(store, batch, batch_id="bad")
    helpers.assert_unchanged(before, helpers.store_digest(store, moto))
