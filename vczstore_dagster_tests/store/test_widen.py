"""``vczstore widen``: a store whose first batch gave a field a narrow integer type (call_DP int8
from shallow data) takes a later batch with larger values once the field is widened, in one
commit; history keeps the old type; bad requests are refused with the store untouched."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from vczstore_dagster_tests import helpers

NV = 120
VCHUNK = 50
SCHUNK = 8


@pytest.fixture
def shallow(vcf_batch, tmp_path):
    first = vcf_batch("W", 12, num_variants=NV)  # depths < 60: bio2zarr makes call_DP int8
    store, url = helpers.build_store("icechunk", [first], tmp_path, samples_chunk_size=SCHUNK,
                                     variants_chunk_size=VCHUNK)
    assert np.dtype(store.readonly_group()["call_DP"].dtype) == np.int8
    return store, url, first


def test_widen_then_a_deeper_batch_appends(shallow, vcf_batch, tmp_path):
    from vczstore_dagster.store import (
        InvalidInputError,
        append_batch,
        store_info,
        tag_release,
        widen_field,
    )

    store, url, first = shallow
    deep = vcf_batch("W", 10, start=12, num_variants=NV, dp_max=1000)
    with pytest.raises(InvalidInputError, match=r"vczstore widen STORE call_DP int16"):
        helpers.convert_like(store, [deep], tmp_path / "refused.vcz")
    tag_release(store, "before")

    result = widen_field(store, "call_DP", "int16")
    assert (result.field, result.old_dtype, result.new_dtype) == ("call_DP", "int8", "int16")
    # 3 variant chunks x 2 sample-chunk columns of call_DP
    assert result.chunks_rewritten == 3 * 2 and result.snapshot_id
    group = store.readonly_group()
    assert np.dtype(group["call_DP"].dtype) == np.int16
    before = store.readonly_group("before")
    assert np.dtype(before["call_DP"].dtype) == np.int8, "the release keeps the old type"
    np.testing.assert_array_equal(group["call_DP"][...], before["call_DP"][...])
    helpers.assert_matches_bcftools(store, [first])

    batch = tmp_path / "deep.vcz"
    converted = helpers.convert_like(store, [deep], batch)
    assert np.dtype(zarr.open_group(converted.path, mode="r")["call_DP"].dtype) == np.int16
    appended = append_batch(store, batch, batch_id="deep")
    assert appended.fast_path and appended.chunks_copied > 0, appended
    helpers.assert_matches_bcftools(store, [first, deep])
    assert int(store.readonly_group()["call_DP"][...].max()) > 127
    assert store_info(store).num_samples == 22


def test_cli_widen(shallow):
    store, url, first = shallow
    proc = helpers.run([helpers.venv_tool("vczstore"), "--no-progress", "widen", url, "call_DP",
                        "int32"])
    assert "widened call_DP: int8 → int32" in proc.stdout, proc.stdout
    assert np.dtype(store.readonly_group()["call_DP"].dtype) == np.int32
    helpers.assert_matches_bcftools(store, [first])


@pytest.mark.parametrize("field, dtype, words", [
    ("call_XX", "int16", ["call_XX", "not a FORMAT field", "call_DP"]),
    ("call_GQ", "float64", ["call_GQ", "float32", "only integer fields"]),
    ("call_DP", "float32", ["float32", "integer type"]),
    ("call_DP", "int8", ["already int8"]),
    ("call_DP", "uint8", ["int8", "uint8 would not hold"]),
    ("call_DP", "notatype", ["'notatype'", "not a type name"]),
    ("call_genotype_mask", "int8", ["call_genotype_mask", "bool", "only integer fields"]),
])
def test_bad_widen_is_refused_and_changes_nothing(shallow, field, dtype, words):
    store, url, _ = shallow
    before = helpers.store_digest(store)
    proc = helpers.run([helpers.venv_tool("vczstore"), "widen", url, field, dtype], check=False)
    assert proc.returncode != 0
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)
    helpers.assert_unchanged(before, helpers.store_digest(store))


def test_widen_refuses_a_plain_zarr_store(vcf_batch, tmp_path):
    from vczstore_dagster.store import InvalidInputError, widen_field

    first = vcf_batch("W", 4, num_variants=NV)
    store, _ = helpers.build_store("zarr3", [first], tmp_path, samples_chunk_size=SCHUNK)
    before = helpers.store_digest(store)
    with pytest.raises(InvalidInputError, match="needs an Icechunk store"):
        widen_field(store, "call_DP", "int16")
    helpers.assert_unchanged(before, helpers.store_digest(store))


def test_check_names_the_widen_command(shallow, vcf_batch, tmp_path):
    """A batch converted in its own schema (what Dagster stages when it does not fit the store's)
    is refused by check with the command that makes room for it."""
    from vczstore_dagster.store import check_batch

    store, _, _ = shallow
    deep = vcf_batch("W", 6, start=12, num_variants=NV, dp_max=1000)
    batch = helpers.bio2zarr_convert([deep], tmp_path / "deep.vcz", samples_chunk_size=SCHUNK,
                                     variants_chunk_size=VCHUNK)
    report = check_batch(store, batch)
    messages = [f.message for f in report.errors if f.id == "field_dtype"]
    assert messages and "vczstore widen STORE call_DP int16" in messages[0], report.findings
