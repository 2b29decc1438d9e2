"""``init --float-compression``: a store whose float FORMAT fields use a cheaper blosc codec than
bio2zarr's, which every batch converted ``--like`` it follows, so appends stay on the fast path."""

from __future__ import annotations

import pytest

from vczstore_dagster_tests import helpers


def _blosc(array) -> dict:
    (codec,) = [c for c in array.metadata.to_dict()["codecs"] if c["name"] == "blosc"]
    return codec["configuration"]


@pytest.mark.parametrize("backend", ["icechunk", "zarr3"])
def test_store_and_later_batches_use_the_float_codec(vcf_batch, tmp_path, backend):
    import zarr

    from vczstore_dagster.store import append_batch, convert_vcfs, init_store, open_store

    first = vcf_batch("F", 10, num_variants=60)
    second = vcf_batch("G", 13, start=10, num_variants=60)
    b1 = tmp_path / "b1.vcz"
    helpers.bio2zarr_convert([first], b1, samples_chunk_size=8, variants_chunk_size=20)
    url = str(tmp_path / "store")
    init_store(url, from_vcz=str(b1), backend="icechunk" if backend == "icechunk" else "zarr",
               float_compression="zstd:1:bitshuffle")
    store = open_store(url)
    group = store.readonly_group()
    gq = _blosc(group["call_GQ"])
    assert (gq["cname"], gq["clevel"], gq["shuffle"]) == ("zstd", 1, "bitshuffle")
    source = zarr.open_group(str(b1), mode="r")
    assert _blosc(group["call_DP"]) == _blosc(source["call_DP"]), "non-float fields keep their codec"

    converted = convert_vcfs([str(second)], str(tmp_path / "b2.vcz"), like=store)
    assert _blosc(zarr.open_group(converted.path, mode="r")["call_GQ"]) == gq
    result = append_batch(store, converted.path, batch_id="b2")
    assert result.chunks_reencoded <= helpers.chunks_per_sample_column(store), result
    helpers.assert_matches_bcftools(store, [first, second])


@pytest.mark.parametrize("spec", ["zstd", "zstd:12", "snappy:3", "zstd:3:byteshuffle", "zstd:x", ""])
def test_bad_float_compression_names_the_setting_and_creates_nothing(vcf_batch, tmp_path, spec):
    from vczstore_dagster.store import InvalidInputError, init_store

    first = vcf_batch("F", 4, num_variants=20)
    b1 = tmp_path / "b1.vcz"
    helpers.bio2zarr_convert([first], b1, samples_chunk_size=8)
    url = tmp_path / "store"
    args = [helpers.venv_tool("vczstore"), "init", str(url), "--from", str(b1),
            "--float-compression", spec]
    proc = helpers.run(args, check=False)
    assert proc.returncode != 0
    assert "float compression" in proc.stderr and "CNAME:LEVEL" in proc.stderr, proc.stderr
    assert not url.exists()
    with pytest.raises(InvalidInputError, match="float compression"):
        init_store(str(url), from_vcz=str(b1), float_compression=spec)
    assert not url.exists()
