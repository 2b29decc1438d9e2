"""Input the store must never take, each refused with an error naming the batch and the sample or
array, the store byte for byte unchanged: unprintable sample IDs, a batch without samples, a
chunk that cannot be decoded, a VCF that cannot be read."""

from __future__ import annotations

import gzip
import re
import shutil
import types

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from vczstore_dagster import testdata
from vczstore_dagster.cli import cli
from vczstore_dagster.store import schema
from vczstore_dagster_tests import helpers

NV = 100
VCHUNK = 50
SCHUNK = 8


def run(*args):
    return CliRunner().invoke(cli, ["--no-progress", *map(str, args)])


@pytest.fixture(scope="module")
def base(vcf_batch, tmp_path_factory):
    """A store of 12 samples (a partial sample column of 4), a good next batch converted --like
    it (9 samples: one column re-encoded, one copied as encoded bytes)."""
    work = tmp_path_factory.mktemp("bad_batches")
    first = vcf_batch("S", 12, num_variants=NV)
    store, url = helpers.build_store("icechunk", [first], work, samples_chunk_size=SCHUNK,
                                     variants_chunk_size=VCHUNK)
    good_vcf = vcf_batch("S", 9, start=12, num_variants=NV)
    good = work / "good.vcz"
    helpers.convert_like(store, [good_vcf], good)
    return types.SimpleNamespace(url=url, first=first, good=good, good_vcf=good_vcf)


@pytest.fixture
def store(base, tmp_path):
    from vczstore_dagster.store import open_store

    path = tmp_path / "store"
    shutil.copytree(base.url, path)
    return open_store(str(path))


def assert_check_and_append_refuse(store, batch, finding, *words, safe_words=()):
    """``check`` exits 1 with an error row ``finding`` naming ``words``, ``append`` exits 1 naming
    them, and the store is byte for byte unchanged (no orphan chunk either)."""
    from vczstore_dagster.store import check_batch

    before = helpers.store_digest(store)
    r = run("check", store.url, batch)
    assert r.exit_code == 1, r.output
    rows = [line for line in r.stdout.splitlines() if re.match(rf"^error\s+{finding}\s", line)]
    assert rows, r.stdout
    r2 = run("append", store.url, batch, "--batch-id", "bad")
    assert r2.exit_code == 1 and "refused" in r2.stderr, r2.output
    for w in words:
        assert w in rows[0], (w, rows[0])
        assert w in r2.stderr, (w, r2.stderr)
    safe = next(f for f in check_batch(store, batch).errors if f.id == finding).public_message
    for w in safe_words:
        assert w in safe, (w, safe)
    helpers.assert_unchanged(before, helpers.store_digest(store))
    return safe


# ---------------------------------------------------------------------------------------------
# Sample IDs
# ---------------------------------------------------------------------------------------------


def _with_ids(src, tmp_path, edit, name="ids.vcz"):
    batch = tmp_path / name
    shutil.copytree(src, batch)
    g = zarr.open_group(str(batch), mode="r+", use_consolidated=False)
    offset = int(g.attrs.get("vczstore_sample_offset", 0))
    ids = np.asarray(g["sample_id"][...]).astype(object)
    ids[offset:] = edit(list(ids[offset:]))
    g["sample_id"][...] = ids
    zarr.consolidate_metadata(str(batch))
    return batch


@pytest.mark.parametrize("char, named", [("\t", "TAB"), ("\n", "newline"), ("\x01", "U+0001"),
                                         ("\x7f", "U+007F"), ("\r", "carriage return")])
def test_sample_id_with_a_control_character(store, base, tmp_path, char, named):
    def edit(ids):
        ids[2] = f"S0{char}0014" if char != "\r" else ids[2] + char
        return ids

    batch = _with_ids(base.good, tmp_path, edit)
    safe = assert_check_and_append_refuse(store, batch, "sample_id_control", named,
                                          "batch position 2", safe_words=[named, "position 2"])
    assert "S0" not in safe and "ids.vcz" in safe  # no sample ID in what Dagster keeps
    if char == "\r":
        assert "Windows line endings" in safe


def test_control_character_in_a_vcf_sample_name(store, vcf_batch, tmp_path):
    vcf = vcf_batch(samples=["S00020", "S0\x010021", "S00022"], num_variants=NV)
    batch = tmp_path / "b.vcz"
    assert run("convert", vcf, batch, "--like", store.url).exit_code == 0
    assert_check_and_append_refuse(store, batch, "sample_id_control", "U+0001", r"S0\x010021")


def test_store_cannot_start_with_an_unprintable_sample_id(base, tmp_path):
    plain = helpers.bio2zarr_convert([base.good_vcf], tmp_path / "plain.vcz",
                                     samples_chunk_size=SCHUNK)
    batch = _with_ids(plain, tmp_path, lambda ids: [ids[0] + "\tx", *ids[1:]])
    r = run("init", tmp_path / "new", "--from", batch)
    assert r.exit_code == 1 and "TAB" in r.stderr and "ids.vcz" in r.stderr, r.output
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())


# ---------------------------------------------------------------------------------------------
# A batch without samples
# ---------------------------------------------------------------------------------------------


def test_batch_without_samples(store, tmp_path):
    sites_only = testdata.write_sites_vcf(tmp_path / "sites.vcf", num_variants=NV)
    r = run("convert", sites_only, tmp_path / "like.vcz", "--like", store.url)
    assert r.exit_code == 1 and "no samples" in r.stderr and "sites.vcf" in r.stderr, r.output
    assert not (tmp_path / "like.vcz").exists()
    plain = tmp_path / "zero.vcz"
    assert run("convert", sites_only, plain).exit_code == 0
    assert_check_and_append_refuse(store, plain, "no_samples", "zero.vcz", "has no samples")
    r = run("check", store.url, plain)
    assert "field_missing" not in r.stdout and "call_AD" not in r.stdout, r.stdout
    r = run("init", tmp_path / "new", "--from", plain)
    assert r.exit_code == 1 and "no samples" in r.stderr and "--variants" in r.stderr, r.output


# ---------------------------------------------------------------------------------------------
# Chunks that cannot be decoded
# ---------------------------------------------------------------------------------------------


def _damaged(src, tmp_path, array, column, how):
    batch = tmp_path / "damaged.vcz"
    shutil.copytree(src, batch)
    a = zarr.open_group(str(batch), mode="r")[array]
    coords = [0] * a.ndim
    coords[schema.sample_axis(a)] = column
    key = a.metadata.encode_chunk_key(tuple(coords))
    path = batch / array / key
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:  # the same length of noise
        path.write_bytes(np.random.default_rng(1).bytes(len(data)))
    return batch, key


@pytest.mark.parametrize("array, column, how", [
    ("call_AD", 1, "truncated"),  # a column the append copies as encoded bytes
    ("call_genotype", 0, "truncated"),  # the column shared with the store, re-encoded
    ("call_GQ", 1, "noise"),
    ("sample_id", 1, "empty"),
])
def test_batch_with_a_damaged_chunk(store, base, tmp_path, array, column, how):
    batch, key = _damaged(base.good, tmp_path, array, column, how)
    assert_check_and_append_refuse(store, batch, "chunk_damaged", f"chunk {key} of array {array}",
                                   "damaged.vcz")


def test_damaged_chunk_on_a_zarr2_store(make_store, vcf_batch, tmp_path):
    """Zarr 2 chunk keys and codecs (numcodecs blosc)."""
    store, _ = make_store("zarr2", [vcf_batch("S", 12, num_variants=NV)], samples_chunk_size=SCHUNK,
                          variants_chunk_size=VCHUNK)
    good = tmp_path / "good.vcz"
    helpers.convert_like(store, [vcf_batch("S", 9, start=12, num_variants=NV)], good)
    batch, key = _damaged(good, tmp_path, "call_DP", 1, "truncated")
    assert_check_and_append_refuse(store, batch, "chunk_damaged", f"chunk {key} of array call_DP")


def test_damaged_chunk_is_refused_when_harmonising_or_starting_a_store(store, base, tmp_path):
    plain = helpers.bio2zarr_convert([base.good_vcf], tmp_path / "plain.vcz",
                                     samples_chunk_size=SCHUNK)
    batch, key = _damaged(plain, tmp_path, "call_PL", 0, "truncated")
    r = run("convert", batch, tmp_path / "h.vcz", "--like", store.url)
    assert r.exit_code == 1 and f"chunk {key} of array call_PL" in r.stderr, r.output
    assert not (tmp_path / "h.vcz").exists()
    r = run("init", tmp_path / "new", "--from", batch)
    assert r.exit_code == 1 and f"chunk {key} of array call_PL" in r.stderr, r.output


# ---------------------------------------------------------------------------------------------
# VCF files that cannot be read
# ---------------------------------------------------------------------------------------------


def _truncated_bgzip(good, tmp_path):
    path = tmp_path / "garbage.vcf.gz"
    path.write_bytes(good.read_bytes()[:3000])
    shutil.copyfile(str(good) + ".csi", str(path) + ".csi")
    return path


def _text(text):
    def make(good, tmp_path):
        path = tmp_path / "garbage.vcf"
        path.write_text(text)
        return path
    return make


def _noise(good, tmp_path):
    path = tmp_path / "garbage.vcf.gz"
    path.write_bytes(np.random.default_rng(2).bytes(4000))
    return path


def _bad_record(good, tmp_path):
    lines = gzip.decompress(good.read_bytes()).decode().splitlines(keepends=True)
    i = next(k for k, line in enumerate(lines) if not line.startswith("#")) + 3
    lines[i] = "\t".join(lines[i].split("\t")[:12]) + "\n"  # a record with 3 sample columns
    return _text("".join(lines))(good, tmp_path)


@pytest.mark.parametrize("make, said", [
    (_truncated_bgzip, r"BGZF|truncated"),
    (_text("hello, not a VCF\n"), r"\S"),
    (_noise, r"\S"),
    (_bad_record, r"columns|samples"),
])
def test_garbage_vcf(store, base, tmp_path, make, said):
    path = make(base.good_vcf, tmp_path)
    before = helpers.store_digest(store)
    r = run("convert", path, tmp_path / "out.vcz", "--like", store.url)
    assert r.exit_code == 1, r.output
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {path}: cannot be read as VCF"), line
    assert "()" not in line and re.search(said, line.split("cannot be read as VCF", 1)[1]), line
    assert not (tmp_path / "out.vcz").exists()
    helpers.assert_unchanged(before, helpers.store_digest(store))
