"""Ground truth: a store built by ``init`` + ``append`` reads back (through vcztools, an independent
reader) exactly like ``bcftools merge`` of the original VCFs, on every backend and layout."""

from __future__ import annotations

import io

import numpy as np
import pytest

from vczstore_dagster_tests import helpers

NUM_VARIANTS = 150  # 75 per contig
VARIANTS_CHUNK = 50  # several variant chunks per contig


def build_and_append(make_store, vcf_batch, tmp_path, kind, sizes, *, samples_chunk_size=8):
    """init from the first batch, then append the others (each converted ``--like`` the store)."""
    from vczstore_dagster.store import append_batch

    vcfs = []
    start = 0
    for n in sizes:
        vcfs.append(vcf_batch("P", n, start=start, num_variants=NUM_VARIANTS))
        start += n
    store, url = make_store(kind, [vcfs[0]], samples_chunk_size=samples_chunk_size,
                            variants_chunk_size=VARIANTS_CHUNK, batch_id="b0")
    results = []
    for i, vcf in enumerate(vcfs[1:], start=1):
        out = tmp_path / f"b{i}.vcz"
        converted = helpers.convert_like(store, [vcf], out)
        n0 = sum(sizes[:i])
        assert converted.num_samples == sizes[i]
        assert converted.sample_offset == n0 % samples_chunk_size
        result = append_batch(store, out, batch_id=f"b{i}")
        assert (result.samples_before, result.samples_after) == (n0, n0 + sizes[i])
        results.append(result)
    return store, url, vcfs, results


def assert_ledger(store, sizes):
    from vczstore_dagster.store import store_info

    info = store_info(store)
    assert info.num_samples == sum(sizes)
    assert info.num_variants == NUM_VARIANTS
    ranges = [(b.batch_id, b.sample_start, b.sample_stop) for b in info.batches]
    expected, start = [], 0
    for i, n in enumerate(sizes):
        expected.append((f"b{i}", start, start + n))
        start += n
    assert ranges == expected


def test_icechunk_local_aligned(make_store, vcf_batch, tmp_path):
    sizes = [16, 8, 24]
    store, _, vcfs, results = build_and_append(make_store, vcf_batch, tmp_path, "icechunk", sizes)
    helpers.assert_matches_bcftools(store, vcfs)
    assert_ledger(store, sizes)
    for r in results:
        # aligned and encoded in the store's schema: every chunk is copied as encoded bytes
        assert r.fast_path
        assert r.chunks_reencoded == 0, r
        assert r.chunks_copied > 0 and r.bytes_copied > 0, r


def test_unaligned_append_on_one_worker_reads_the_same(make_store, vcf_batch, tmp_path, monkeypatch):
    """VCZSTORE_WORKERS=1 (an operator sharing a machine) re-encodes the partial column serially."""
    monkeypatch.setenv("VCZSTORE_WORKERS", "1")
    sizes = [10, 13]
    store, _, vcfs, results = build_and_append(make_store, vcf_batch, tmp_path, "icechunk", sizes)
    helpers.assert_matches_bcftools(store, vcfs)
    assert results[0].chunks_reencoded > 0


def test_icechunk_local_unaligned_several_sizes(make_store, vcf_batch, tmp_path):
    from vczstore_dagster.store import write_vcf

    sizes = [10, 3, 13, 1]
    store, _, vcfs, results = build_and_append(make_store, vcf_batch, tmp_path, "icechunk", sizes)
    helpers.assert_matches_bcftools(store, vcfs)
    assert_ledger(store, sizes)
    one_column = helpers.chunks_per_sample_column(store)
    for r in results:
        assert r.fast_path, r
        if r.samples_before % 8:
            # only the store's partial column is re-encoded; everything else is copied
            assert 0 < r.chunks_reencoded <= one_column, r
        else:
            assert r.chunks_reencoded == 0, r
    big = results[1]  # 13 samples onto 13: spans the partial column and two more
    assert big.chunks_copied > 0, big
    # The engine's own VCF writer agrees with bcftools too.
    out = io.StringIO()
    write_vcf(store, out)
    expected = helpers.parse_vcf_text(helpers.bcftools_truth(vcfs))
    problems = helpers.compare_tables(expected, helpers.parse_vcf_text(out.getvalue()))
    assert not problems, problems


def test_icechunk_s3(make_store, vcf_batch, tmp_path, moto_s3):
    sizes = [8, 5, 11]
    store, url, vcfs, results = build_and_append(make_store, vcf_batch, tmp_path, "s3", sizes)
    assert url.startswith("s3://")
    assert store.backend == "icechunk"
    helpers.assert_matches_bcftools(store, vcfs)
    assert_ledger(store, sizes)
    assert results[0].chunks_reencoded == 0  # 8 onto 8: aligned
    assert results[1].chunks_reencoded > 0  # 11 onto 13: partial column re-encoded
    assert helpers.s3_digest(moto_s3, url), "nothing was written to S3"


@pytest.mark.parametrize("kind", ["zarr2", "zarr3"])
def test_plain_zarr(make_store, vcf_batch, tmp_path, kind):
    import zarr

    sizes = [8, 5, 11]
    store, url, vcfs, results = build_and_append(make_store, vcf_batch, tmp_path, kind, sizes)
    assert store.backend == "zarr"
    # onto a whole number of sample chunks: every chunk copied as encoded bytes, on both formats
    assert results[0].chunks_reencoded == 0 and results[0].chunks_copied > 0, results[0]
    group = zarr.open_group(url, mode="r")
    assert group.metadata.zarr_format == (2 if kind == "zarr2" else 3)
    helpers.assert_matches_bcftools(store, vcfs)
    assert_ledger(store, sizes)
    # an independent open of the directory, without the engine, reads the same thing
    helpers.assert_matches_bcftools(zarr.open_group(url, mode="r"), vcfs)


def _assert_zero_sample_store(store):
    from vczstore_dagster.store import store_info

    group = store.readonly_group()
    assert group["sample_id"].shape == (0,)
    calls = [n for n in group.array_keys() if n.startswith("call_")]
    for name in ("call_genotype", "call_DP", "call_GQ", "call_AD", "call_PL", "call_HQ",
                 "call_FT"):
        assert name in calls, f"{name} missing from the zero-sample store: {calls}"
    for name in calls:
        assert group[name].shape[:2] == (NUM_VARIANTS, 0), (name, group[name].shape)
    assert store_info(store).num_samples == 0


def _append_and_check(store, vcf_batch, tmp_path):
    from vczstore_dagster.store import append_batch

    vcfs = [vcf_batch("V", 11, num_variants=NUM_VARIANTS)]  # 11 samples onto 0
    for i, vcf in enumerate(vcfs):
        helpers.convert_like(store, [vcf], tmp_path / f"v{i}.vcz")
        append_batch(store, tmp_path / f"v{i}.vcz", batch_id=f"v{i}")
    helpers.assert_matches_bcftools(store, vcfs)


def test_init_variants_from_sites_only_vcf_then_append(make_store, vcf_batch, tmp_path):
    """A sites-only VCF of the panel (FORMAT definitions in the header, no sample columns)."""
    from vczstore_dagster import testdata

    sites = testdata.write_sites_vcf(tmp_path / "sites.vcf", num_variants=NUM_VARIANTS)
    assert helpers.vcf_samples(sites) == []
    store, _ = make_store("icechunk", variants=[sites], samples_chunk_size=8)
    _assert_zero_sample_store(store)
    _append_and_check(store, vcf_batch, tmp_path)


def test_init_variants_from_vcz_then_append(make_store, vcf_batch, tmp_path):
    vcz = helpers.bio2zarr_convert([vcf_batch("X", 3, num_variants=NUM_VARIANTS)],
                                   tmp_path / "panel.vcz", samples_chunk_size=8,
                                   variants_chunk_size=VARIANTS_CHUNK)
    store, _ = make_store("icechunk", variants=[vcz], samples_chunk_size=8)
    _assert_zero_sample_store(store)
    _append_and_check(store, vcf_batch, tmp_path)


def test_release_tag_keeps_its_state(make_store, vcf_batch, tmp_path):
    from vczstore_dagster.store import append_batch, list_releases, store_info, tag_release

    sizes = [10, 7]
    store, _, vcfs, _ = build_and_append(make_store, vcf_batch, tmp_path, "icechunk", sizes)
    rel = tag_release(store, "2026-11", message="first")
    assert rel.active_samples == 17
    later = vcf_batch("P", 9, start=17, num_variants=NUM_VARIANTS)
    helpers.convert_like(store, [later], tmp_path / "later.vcz")
    append_batch(store, tmp_path / "later.vcz", batch_id="later")

    helpers.assert_matches_bcftools(store, [*vcfs, later])
    helpers.assert_matches_bcftools(store, vcfs, at="2026-11")
    assert store_info(store, at="2026-11").num_samples == 17
    assert store_info(store).num_samples == 26
    releases = {r.name: r for r in list_releases(store)}
    assert releases["2026-11"].active_samples == 17
    assert releases["2026-11"].snapshot_id == rel.snapshot_id
    # tags are immutable: the same name cannot be tagged again
    from vczstore_dagster.store import VczStoreError

    with pytest.raises(VczStoreError, match="2026-11"):
        tag_release(store, "2026-11")


def test_batch_on_another_grid_is_reencoded(make_store, vcf_batch, tmp_path):
    """A batch not converted --like the store (plain bio2zarr, other chunking) takes the slow path."""
    from vczstore_dagster.store import append_batch, check_batch

    first = vcf_batch("P", 10, num_variants=NUM_VARIANTS)
    store, _ = make_store("icechunk", [first], samples_chunk_size=8,
                          variants_chunk_size=VARIANTS_CHUNK)
    other = vcf_batch("P", 12, start=10, num_variants=NUM_VARIANTS)
    batch = helpers.bio2zarr_convert([other], tmp_path / "other.vcz", samples_chunk_size=5,
                                     variants_chunk_size=40)
    report = check_batch(store, batch)
    assert report.ok, report.findings
    assert not report.fast_path
    result = append_batch(store, batch, batch_id="other")
    assert not result.fast_path and result.chunks_copied == 0 and result.chunks_reencoded > 0
    helpers.assert_matches_bcftools(store, [first, other])
    # the store keeps its own chunking
    group = store.readonly_group()
    assert group["call_genotype"].chunks[:2] == (VARIANTS_CHUNK, 8)
    assert np.asarray(group["sample_id"][...]).shape == (22,)


def _blosc_of(array):
    """The array's blosc codec as numcodecs sees it (its metadata's level), or None."""
    import numcodecs

    meta = array.metadata
    if meta.zarr_format == 2:
        return meta.compressor if isinstance(meta.compressor, numcodecs.Blosc) else None
    for codec in meta.to_dict()["codecs"]:
        if codec["name"] == "blosc":
            c = codec["configuration"]
            return numcodecs.Blosc(cname=c["cname"], clevel=c["clevel"], blocksize=c["blocksize"],
                                   shuffle=["noshuffle", "shuffle", "bitshuffle"].index(c["shuffle"]),
                                   typesize=c["typesize"])
    return None


@pytest.mark.parametrize("kind", ["icechunk", "zarr2", "zarr3"])
def test_shared_column_is_written_at_level_1(make_store, vcf_batch, tmp_path, kind):
    """The one column an unaligned append re-encodes is written with the array's codec at level 1
    (fast); the metadata keeps the store's level and readers get the same values."""
    import numcodecs
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    from vczstore_dagster.store import schema

    sizes = [10, 13]  # 13 onto 10 with columns of 8: store column 1 is shared
    store, _, vcfs, results = build_and_append(make_store, vcf_batch, tmp_path, kind, sizes)
    helpers.assert_matches_bcftools(store, vcfs)
    group = store.readonly_group()
    levels_differ, checked = 0, 0
    for name, array in schema.sample_arrays(group).items():
        codec = _blosc_of(array)
        if codec is None or codec.clevel == 1:
            continue
        assert codec.clevel == 7, f"{name}: the store's metadata lost bio2zarr's level"
        fast = numcodecs.get_codec({**codec.get_config(), "clevel": 1})
        axis = schema.sample_axis(array)
        coords = [0] * array.ndim
        coords[axis] = 1
        key = f"{name}/{array.metadata.encode_chunk_key(tuple(coords))}"
        raw = sync(array.async_array.store_path.store.get(key, prototype=default_buffer_prototype()))
        raw = raw.to_bytes()
        numeric = getattr(array.dtype, "kind", "") in "biuf"
        decoded = np.frombuffer(codec.decode(raw), dtype=array.dtype if numeric else np.uint8)
        assert raw == fast.encode(decoded), f"{name}: shared column not at level 1"
        levels_differ += codec.encode(decoded) != raw
        checked += 1
    assert checked >= 3, checked
    assert levels_differ, "every chunk encodes the same at both levels: the check proves nothing"
    assert results[0].chunks_reencoded > 0
