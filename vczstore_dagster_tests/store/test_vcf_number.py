"""A FORMAT field at a site whose alleles the batch lists in another order or extends (a new ALT
allele), by its VCF Number: R, A and G are remapped, a fixed Number (``HQ`` with ``Number=2``, as in
the VCF specification's example) does not depend on the alleles and is copied as it is, and
``Number=.`` is refused, naming the field, the batch and the site. The Number is recorded on every
array the engine's conversion writes (``vcf_number``); a batch or store made elsewhere lacks it,
and the refusal says so. Ground truth: ``bcftools merge`` of the VCFs."""

from __future__ import annotations

import dataclasses

import pytest
import zarr

from vczstore_dagster import testdata
from vczstore_dagster.store import append_batch, convert_vcfs, init_store, open_store
from vczstore_dagster.store.errors import InvalidInputError
from vczstore_dagster.store.harmonise import harmonise_batch
from vczstore_dagster_tests import helpers

NV = 60
VCHUNK = 16
SCHUNK = 4
SITES = tuple(testdata.make_sites(NV, seed=11))
SWAPPED = next(i for i, s in enumerate(SITES) if len(s.alts) > 1)
NEW = next(i for i, s in enumerate(SITES)
           if len(s.alts) == 1 and len(s.ref) == 1 and len(s.alts[0]) == 1)


def hq_number(number: str):
    def edit(text):
        return text.replace("##FORMAT=<ID=HQ,Number=.", f"##FORMAT=<ID=HQ,Number={number}")
    return edit


def remapped_sites():
    """The ALT alleles of one multi-allelic site reversed; one biallelic site with another ALT (a
    new allele for the store)."""
    def change(i, s):
        if i == SWAPPED:
            return dataclasses.replace(s, alts=s.alts[::-1])
        if i == NEW:
            return dataclasses.replace(s, alts=(next(b for b in "ACGT" if b not in (s.ref, *s.alts)),))
        return s
    return tuple(change(i, s) for i, s in enumerate(SITES))


def first_remapped() -> str:
    """The first remapped site, which a refusal names."""
    site = SITES[min(SWAPPED, NEW)]
    return f"{site.contig}:{site.position}"


def vcfs(vcf_batch, number: str):
    """(the store's first batch, a batch remapping two of its sites), HQ with ``number``: two
    values per sample (or none) so that every sample's values count."""
    first = vcf_batch("S", 6, num_variants=NV, sites=SITES, max_hq=2, edit=hq_number(number))
    batch = vcf_batch("S", 5, start=6, num_variants=NV, sites=remapped_sites(), max_hq=2,
                      edit=hq_number(number))
    return first, batch


def engine_store(vcf, tmp_path):
    """A store whose first batch the engine converted (its arrays record the VCF Number)."""
    vcz = tmp_path / "first.vcz"
    convert_vcfs([vcf], vcz, samples_chunk_size=SCHUNK, variants_chunk_size=VCHUNK)
    url = str(tmp_path / "engine-store")
    init_store(url, from_vcz=str(vcz))
    return open_store(url)


def plain_store(make_store, vcf):
    """A store whose first batch plain bio2zarr converted (no VCF Number recorded)."""
    return make_store("icechunk", [vcf], samples_chunk_size=SCHUNK, variants_chunk_size=VCHUNK)[0]


@pytest.mark.parametrize("recorded_by", ["batch", "store"])
def test_fixed_number_field_is_copied_at_remapped_sites(make_store, vcf_batch, tmp_path,
                                                        recorded_by):
    """``Number=2`` at a site with its ALTs swapped and at one with a new ALT: appended with
    ``--allow-new-alleles``, the store equals bcftools merge. ``batch``: the engine converts the
    batch --like a store made by plain bio2zarr; ``store``: a batch converted by plain bio2zarr
    is harmonised to a store the engine converted (the store's arrays know the Number)."""
    first, batch = vcfs(vcf_batch, "2")
    out = tmp_path / "b.vcz"
    if recorded_by == "batch":
        store = plain_store(make_store, first)
        assert "vcf_number" not in store.readonly_group()["call_HQ"].attrs
        plan = convert_vcfs([batch], out, like=store).harmonisation
        numbers = {name: zarr.open_group(out, mode="r")[name].attrs["vcf_number"]
                   for name in ("call_HQ", "call_AD", "call_PL", "call_DP")}
        assert numbers == {"call_HQ": "2", "call_AD": "R", "call_PL": "G", "call_DP": "1"}
    else:
        store = engine_store(first, tmp_path)
        assert store.readonly_group()["call_HQ"].attrs["vcf_number"] == "2"
        plain = helpers.bio2zarr_convert([batch], tmp_path / "plain.vcz",
                                         samples_chunk_size=SCHUNK, variants_chunk_size=VCHUNK)
        assert "vcf_number" not in zarr.open_group(plain, mode="r")["call_HQ"].attrs
        plan = harmonise_batch(store, plain, out)
    assert plan.remapped == 1 and len(plan.new_alleles) == 1  # the swapped site; the new ALT
    append_batch(store, out, batch_id="b1", allow_new_alleles=True)
    helpers.assert_matches_bcftools(store, [first, batch], cli=False)


def test_variable_number_field_at_a_remapped_site_is_refused(make_store, vcf_batch, tmp_path):
    """``Number=.`` with values at a remapped site: refused naming the field, the batch and the
    site; nothing written, the store byte for byte unchanged. A batch and a store made by plain
    bio2zarr record no Number: the field is taken as ``Number=.``, and the refusal says why."""
    first, batch = vcfs(vcf_batch, ".")
    store = plain_store(make_store, first)
    before = helpers.store_digest(store)
    out = tmp_path / "b.vcz"
    with pytest.raises(InvalidInputError) as err:
        convert_vcfs([batch], out, like=store)
    message = str(err.value)
    for words in ("batch b.vcz", "field call_HQ", first_remapped(), "Number=."):
        assert words in message, message
    assert "record no VCF Number" not in message
    assert not out.exists()

    plain = helpers.bio2zarr_convert([batch], tmp_path / "plain.vcz", samples_chunk_size=SCHUNK,
                                     variants_chunk_size=VCHUNK)
    with pytest.raises(InvalidInputError) as err:
        harmonise_batch(store, plain, tmp_path / "h.vcz")
    message = str(err.value)
    for words in ("batch plain", "field call_HQ", first_remapped(), "record no VCF Number",
                  "Number=."):
        assert words in message, message
    assert not (tmp_path / "h.vcz").exists()
    helpers.assert_unchanged(before, helpers.store_digest(store))
