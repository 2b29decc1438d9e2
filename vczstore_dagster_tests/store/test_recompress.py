"""Chunks written at the fast level (removal, redaction, re-encoded appends) decode to the same
values as chunks at the store's level, the ledger lists their columns, ``info`` reports them, and
``recompress`` brings them back to the store's level without changing a value."""

from __future__ import annotations

import itertools

import numcodecs
import numpy as np
import pytest

from vczstore_dagster.store import InvalidInputError, append_batch, schema, store_info, tag_release
from vczstore_dagster.store.ledger import read_ledger
from vczstore_dagster.store.purge import purge
from vczstore_dagster.store.recompress import recompress_store
from vczstore_dagster.store.remove import remove_samples
from vczstore_dagster_tests import helpers
from vczstore_dagster_tests.store.test_ground_truth import _blosc_of
from vczstore_dagster_tests.store.test_withdrawal import two_batch_store

CHUNK = 4  # two_batch_store: 12 + 10 samples in columns of 4 (6 columns), 60 variants in chunks of 20


def values(group) -> dict[str, np.ndarray]:
    return {name: np.asarray(a[...]) for name, a in schema.sample_arrays(group).items()}


def assert_same_except(before, after, slots) -> None:
    """Every value equal (NaN equal to NaN) except the samples at ``slots``."""
    for name, old in before.items():
        new = after[name]
        assert new.shape == old.shape, name
        keep = np.ones(old.shape[1 if old.ndim > 1 else 0], dtype=bool)
        keep[list(slots)] = False
        a, b = (old[:, keep], new[:, keep]) if old.ndim > 1 else (old[keep], new[keep])
        if a.dtype.kind == "f":
            assert np.array_equal(a, b, equal_nan=True), name
        else:
            assert np.array_equal(schema.strings(a), schema.strings(b)), name


def chunk_levels(group, column: int) -> dict[str, set[int]]:
    """For each array with a blosc level above 1: the levels (1 or the metadata's) whose encoding
    of the decoded values gives exactly the stored bytes, chunk by chunk of ``column``."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    out = {}
    for name, array in schema.sample_arrays(group).items():
        codec = _blosc_of(array)
        if codec is None or codec.clevel == 1:
            continue
        axis = schema.sample_axis(array)
        grid = [range(-(-n // c)) for n, c in zip(array.shape, array.chunks, strict=True)]
        grid[axis] = [column]
        levels = set()
        for coords in itertools.product(*grid):
            key = f"{name}/{array.metadata.encode_chunk_key(coords)}"
            raw = sync(array.async_array.store_path.store.get(key, prototype=default_buffer_prototype()))
            if raw is None:
                continue
            raw = raw.to_bytes()
            numeric = getattr(array.dtype, "kind", "") in "biuf"
            decoded = np.frombuffer(codec.decode(raw), dtype=array.dtype if numeric else np.uint8)
            fast = numcodecs.get_codec({**codec.get_config(), "clevel": 1})
            match = {lvl for lvl, c in ((1, fast), (codec.clevel, codec)) if c.encode(decoded) == raw}
            assert match, f"{key}: stored bytes are neither level 1 nor {codec.clevel}"
            levels |= match if len(match) == 1 else set()  # both levels agree: proves nothing
        out[name] = levels
    return out


def level_of(group, column: int) -> set[int]:
    return set().union(*chunk_levels(group, column).values())


@pytest.mark.parametrize("kind", ["icechunk", "zarr2", "zarr3"])
def test_removal_writes_the_fast_level_and_recompress_restores_the_store_level(
        make_store, vcf_batch, tmp_path, kind):
    store, _, vcfs = two_batch_store(make_store, vcf_batch, tmp_path, kind=kind)
    before = values(store.readonly_group())
    removed = ["W00005", "W00006"]  # store samples 5 and 6: column 1 only
    assert level_of(store.readonly_group(), 1) == {7}
    remove_samples(store, removed)

    group = store.readonly_group()
    after_removal = values(group)
    assert_same_except(before, after_removal, [5, 6])
    assert level_of(group, 1) == {1}, "the removal did not write the fast level"
    assert level_of(group, 0) == {7}, "an untouched column was rewritten"
    assert read_ledger(group).fast_level_columns == [1]
    info = store_info(store).fast_level
    assert info.columns == [1] and info.num_columns == 6 and info.bytes > 0
    assert info.extra_bytes is not None  # estimated from the 5 other columns
    helpers.assert_matches_bcftools(store, vcfs, removed=removed)

    result = recompress_store(store)
    assert result.columns == [1] and result.columns_left == [] and result.chunks_rewritten > 0
    assert result.bytes_after < result.bytes_before
    group = store.readonly_group()
    assert_same_except(after_removal, values(group), [])
    assert level_of(group, 1) == {7}, "recompress did not restore the store's level"
    assert read_ledger(group).fast_level_columns == []
    assert store_info(store).fast_level is None
    helpers.assert_matches_bcftools(store, vcfs, removed=removed)


def test_append_of_a_batch_on_its_own_grid_writes_the_fast_level(make_store, vcf_batch, tmp_path):
    """A batch on another sample grid (plain bio2zarr) onto a store of 10 (columns of 8): every
    column it touches is re-encoded at the fast level, each of its chunks decoded once, and reads
    the same as bcftools."""
    first = vcf_batch("P", 10, num_variants=60)
    store, _ = make_store("icechunk", [first], samples_chunk_size=8, variants_chunk_size=20)
    other = vcf_batch("P", 15, start=10, num_variants=60)
    batch = helpers.bio2zarr_convert([other], tmp_path / "other.vcz", samples_chunk_size=5,
                                     variants_chunk_size=20)
    result = append_batch(store, batch, batch_id="other")
    assert not result.fast_path and result.chunks_copied == 0
    helpers.assert_matches_bcftools(store, [first, other])
    group = store.readonly_group()
    assert read_ledger(group).fast_level_columns == [1, 2, 3]  # samples 10-24
    assert level_of(group, 0) == {7}
    for column in (1, 2, 3):
        assert level_of(group, column) == {1}, column
    recompress_store(store, [2])
    assert read_ledger(store.readonly_group()).fast_level_columns == [1, 3]
    assert level_of(store.readonly_group(), 2) == {7}
    helpers.assert_matches_bcftools(store, [first, other])


def test_redacted_release_records_its_fast_level_columns(make_store, vcf_batch, tmp_path):
    store, _, vcfs = two_batch_store(make_store, vcf_batch, tmp_path)
    tag_release(store, "r")
    remove_samples(store, ["X00002"])  # store sample 14: column 3
    recompress_store(store)
    result = purge(store)
    assert [r.replaced_by for r in result.redacted] == ["r-r1"]
    assert store_info(store, at="r-r1").fast_level.columns == [3]
    assert level_of(store.readonly_group("r-r1"), 3) == {1}
    assert store_info(store).fast_level is None
    helpers.assert_matches_bcftools(store, vcfs, removed=["X00002"], at="r-r1")


def test_recompress_refuses_a_column_not_at_the_fast_level(make_store, vcf_batch, tmp_path):
    store, _, _ = two_batch_store(make_store, vcf_batch, tmp_path)
    remove_samples(store, ["W00001"])
    before = helpers.store_digest(store)
    with pytest.raises(InvalidInputError, match=r"column 2 holds no chunks written at the fast "
                                                r"level \(columns at the fast level: 0\)"):
        recompress_store(store, [0, 2])
    helpers.assert_unchanged(before, helpers.store_digest(store))
    cli = helpers.run([helpers.venv_tool("vczstore"), "recompress", store.url, "--column", "5"],
                      check=False)
    assert cli.returncode == 1
    assert "column 5 holds no chunks written at the fast level" in cli.stderr
    helpers.assert_unchanged(before, helpers.store_digest(store))


def test_recompress_with_nothing_to_do_commits_nothing(make_store, vcf_batch, tmp_path):
    store, _, _ = two_batch_store(make_store, vcf_batch, tmp_path)
    before = helpers.store_digest(store)
    result = recompress_store(store)
    assert result.columns == [] and result.snapshot_id is None
    helpers.assert_unchanged(before, helpers.store_digest(store))


def test_cli_info_reports_and_recompress_restores(make_store, vcf_batch, tmp_path):
    store, _, _ = two_batch_store(make_store, vcf_batch, tmp_path)
    remove_samples(store, ["W00001", "X00009"])  # columns 0 and 5 (5 holds 2 samples)
    vczstore = helpers.venv_tool("vczstore")
    info = helpers.run([vczstore, "info", store.url]).stdout
    line = " ".join(info.split("fast level:")[1].split("batches:")[0].split())  # unwrapped
    assert "2 of 6 sample-chunk column(s) written at the fast level (0, 5)" in line, info
    # tiny chunks compress too differently for the per-sample estimate to mean much here
    assert ("over the store's level, estimated from the other columns" in line
            or "no cost measurable against the other columns" in line), info
    assert "`vczstore recompress` re-encodes them" in info
    out = helpers.run([vczstore, "recompress", store.url]).stdout
    assert "recompressed 2 sample-chunk column(s) (0, 5)" in out, out
    assert "fast level" not in helpers.run([vczstore, "info", store.url]).stdout
    assert "nothing to recompress" in helpers.run([vczstore, "recompress", store.url]).stdout


def test_redaction_takes_the_removed_samples_out_of_the_statistics(make_store, vcf_batch, tmp_path):
    """Redacting a release subtracts the removed samples' counts from its statistics (one chunk
    column read): bit for bit what a recount over every genotype gives."""
    from vczstore_dagster.store import stats

    store, _, vcfs = two_batch_store(make_store, vcf_batch, tmp_path)
    tag_release(store, "r")
    removed = ["W00001", "W00010", "X00002", "X00003"]  # columns 0, 2 and 3
    remove_samples(store, removed)
    purge(store)
    group = store.readonly_group("r-r1")
    recount = list(stats.compute(group))
    for k, name in enumerate(("variant_AC", "variant_AN", "variant_NS", "variant_AF",
                              "variant_call_rate"), start=2):
        want = np.concatenate([np.asarray(part[k]) for part in recount])
        got = np.asarray(group[name][...])
        if want.dtype.kind == "f":
            want, got = want.astype("f4").view("i4"), got.view("i4")
        assert np.array_equal(want, got), name
    truth = helpers.bcftools_truth(vcfs, removed)
    filled = helpers.run(["bcftools", "+fill-tags", "-", "--", "-t", "AC,AN"], input=truth).stdout
    from vczstore_dagster_tests.store.test_withdrawal import _info_by_site

    assert _info_by_site(filled, ("AC", "AN")) == _info_by_site(
        helpers.vcztools_text_from_group(group), ("AC", "AN"))
