"""convert --like: the batch takes the store's schema where it matters (the call_* fields)."""

from __future__ import annotations

import numpy as np

from vczstore_dagster.store import append_batch
from vczstore_dagster_tests import helpers


def test_info_fields_larger_than_the_first_batch_do_not_refuse_a_batch(make_store, vcf_batch,
                                                                       tmp_path):
    small = vcf_batch("S", 4, num_variants=30)
    large = vcf_batch("L", 140, num_variants=30)  # NS and AN exceed the int8 the store chose
    store, _ = make_store("icechunk", [small], samples_chunk_size=8)
    assert np.dtype(store.readonly_group()["variant_NS"].dtype) == np.int8
    batch = helpers.convert_like(store, [large], tmp_path / "large.vcz")
    result = append_batch(store, batch.path, batch_id="large")
    assert result.samples_after == 144
    helpers.assert_matches_bcftools(store, [small, large])
