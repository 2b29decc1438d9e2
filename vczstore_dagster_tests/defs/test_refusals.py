"""The refusals of issue 11 through Dagster: each bad batch dropped in the inbox fails one check on
``staged_batch`` with a readable reason (``batch_is_readable`` when it cannot even be converted),
its run ends well and is tagged refused, ``vcz_store[B]`` is neither materialized nor failed, and
the store is byte for byte unchanged; run config on ``staged_batch`` lowers a threshold or allows new
alleles for one run. One real SQLite instance and one store for the module."""

from __future__ import annotations

import dataclasses
import pathlib
import re
import shutil
import types

import dagster as dg
import numpy as np
import pytest
import zarr

from vczstore_dagster import testdata
from vczstore_dagster.defs.partitions import batches
from vczstore_dagster.store import open_store, schema
from vczstore_dagster_tests.defs.conftest import Project, check_evaluations, materializations
from vczstore_dagster_tests.defs.conftest import ingest as ingest_runs
from vczstore_dagster_tests.helpers import assert_unchanged, tree_digest

SITES = tuple(testdata.make_sites(100))


def ingest(world, batch_id: str, config: dict | None = None):
    return ingest_runs(world.defs, world.instance, batch_id, config)


@pytest.fixture(scope="module")
def world(tmp_path_factory, vcf_batch):
    root = tmp_path_factory.mktemp("dagster_refusals") / "project"
    for sub in ("inbox", "staging", "withdrawals"):
        (root / sub).mkdir(parents=True)
    project = Project(root)
    project.drop_batch("first", [vcf_batch("F", 10)])
    defs = project.definitions()
    with dg.instance_for_test() as instance:
        world = types.SimpleNamespace(project=project, defs=defs, instance=instance)
        assert ingest(world, "first").success
        yield world


def _records(edit):
    def text_edit(text):
        return "".join(line if line.startswith("#") else "\t".join(edit(line.rstrip("\n").split("\t"))) + "\n"
                       for line in text.splitlines(keepends=True))
    return text_edit


PREFIX = "Zq"  # every sample ID of the bad batches starts so: none may reach Dagster


def _vcf(vcf_batch, letter, **kwargs):
    return lambda project, name: project.drop_batch(name, [vcf_batch(PREFIX + letter, 4, **kwargs)])


def _vcz(vcf_batch, damage):
    def drop(project, name):
        folder = project.drop_vcz_batch(name, [vcf_batch(PREFIX + "v", 5)], "part.vcz",
                                        samples_chunk_size=4)
        damage(folder / "part.vcz")
    return drop


def _tab_in_an_id(path):
    g = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    ids = np.asarray(g["sample_id"][...]).astype(object)
    ids[1] = PREFIX + "v\t00001"
    g["sample_id"][...] = ids
    zarr.consolidate_metadata(str(path))


def _truncate_a_chunk(path):
    a = zarr.open_group(str(path), mode="r")["call_AD"]
    chunk = path / "call_AD" / a.metadata.encode_chunk_key((0, 1, 0))
    chunk.write_bytes(chunk.read_bytes()[:40])


def _sites_only(project, name):
    project.drop_batch(name, [testdata.write_sites_vcf(project.root / f"{name}.vcf")])


def _garbage(vcf_batch):
    """A bgzipped VCF cut short (its index whole): htslib's reason must reach the operator."""
    def drop(project, name):
        vcf = pathlib.Path(vcf_batch(PREFIX + "g", 10))
        assert vcf.stat().st_size > 3000
        folder = project.inbox / name
        folder.mkdir()
        (folder / vcf.name).write_bytes(vcf.read_bytes()[:3000])
        shutil.copyfile(str(vcf) + ".csi", folder / (vcf.name + ".csi"))
        (folder / "_READY").touch()
    return drop


def _not_a_vcf(project, name):
    """Bytes that are no VCF at all, under a VCF's name: even the header cannot be read."""
    folder = project.inbox / name
    folder.mkdir()
    (folder / "calls.vcf.gz").write_bytes(bytes(range(256)) * 40)
    (folder / "_READY").touch()


def _no_sample_array(path):
    shutil.rmtree(path / "sample_id")
    zarr.consolidate_metadata(str(path))


def _new_alt():
    i = next(i for i, s in enumerate(SITES) if len(s.alts) == 1 and len(s.ref) == 1)
    other = next(b for b in "ACGT" if b != SITES[i].ref and b not in SITES[i].alts)
    return tuple(dataclasses.replace(s, alts=(other,)) if k == i else s for k, s in enumerate(SITES))


CASES = {
    # name: (drop, failed check or asset, words in the reason)
    "shifted": (lambda vb: _vcf(vb, "a", edit=_records(lambda c: [c[0], str(int(c[1]) + 1), *c[2:]])),
                "variants_match_store", [r"shifted by one", r"POS\+1"]),
    "renamed": (lambda vb: _vcf(vb, "b", edit=lambda t: t.replace("chr", "")),
                "variants_match_store", [r"another way", r"1 \(chr1 in the store"]),
    "longer": (lambda vb: _vcf(vb, "c", edit=lambda t: t.replace("length=8000000", "length=8100000")),
               "variants_match_store", [r"chr2 is 8,000,000 bp in the store and 8,100,000"]),
    "new-alt": (lambda vb: _vcf(vb, "d", sites=_new_alt(), max_hq=0),
                "variants_match_store", [r"new ALT allele", r"--allow-new-alleles"]),
    "low-coverage": (lambda vb: _vcf(vb, "e", sites=SITES[::3]),
                     "variants_match_store", [r"covers 34 of the store's 100 sites"]),
    "tab-in-id": (lambda vb: _vcz(vb, _tab_in_an_id), "samples_are_new",
                  [r"control character \(TAB\)", r"batch position 1"]),
    "no-samples": (lambda vb: _sites_only, "samples_are_new", [r"no samples"]),
    "damaged-chunk": (lambda vb: _vcz(vb, _truncate_a_chunk), "fields_match_store",
                      [r"chunk c/0/1/0 of array call_AD cannot be read"]),
    "garbage": (_garbage, "batch_is_readable", [r"cannot be read as VCF: .*BGZF"]),
    "not-a-vcf": (lambda vb: _not_a_vcf, "batch_is_readable", [r"calls.vcf.gz: cannot be read as VCF"]),
    "no-sample-array": (lambda vb: _vcz(vb, _no_sample_array), "batch_is_readable",
                        [r"part.vcz: its sample_id array cannot be read as a VCZ"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_batch_is_refused_and_the_store_is_unchanged(world, vcf_batch, name):
    drop, failed, words = CASES[name]
    drop(vcf_batch)(world.project, name)
    before = tree_digest(world.project.store_url)
    result = ingest(world, name)
    assert result.finished and not result.appended and result.refused == failed
    [run_id] = result.run_ids
    assert world.instance.get_run_by_id(run_id).tags["vczstore/refused"] == failed
    statuses = world.instance.get_status_by_partition(dg.AssetKey("vcz_store"), [name], batches)
    assert statuses[name] is None  # planned in the run, neither materialized nor failed
    check = check_evaluations(result)[failed]
    assert not check.passed and check.partition == name
    reason = check.description
    assert all(e.passed for c, e in check_evaluations(result).items() if c != failed), \
        {c: e.description for c, e in check_evaluations(result).items()}
    # The store's audit shows the store as it stands, not a check that did not run.
    audit = check_evaluations(result)["store_consistent"]
    assert audit.passed and audit.partition == name
    assert audit.description.startswith(f"nothing written: batch {name} ")
    for w in words:
        assert re.search(w, reason), (w, reason)
    assert PREFIX not in reason
    assert_unchanged(before, tree_digest(world.project.store_url))


def test_coverage_figures_are_metadata(world):
    """(after the low-coverage batch above) staged_batch and the check carry the numbers."""
    records = world.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("staged_batch"), asset_partitions=["low-coverage"]),
        limit=1).records
    meta = {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
    assert meta["site_coverage"] == pytest.approx(0.34) and meta["sites_covered"] == 34
    assert meta["store_sites"] == 100 and meta["dropped_fraction"] == 0.0
    assert (meta["min_site_coverage"], meta["max_dropped_fraction"]) == (0.5, 0.5)
    rows = {r.data["contig"]: r.data for r in meta["coverage_by_contig"].records}
    assert set(rows) == {"chr1", "chr2"} and sum(r["covered"] for r in rows.values()) == 34


def test_run_config_lowers_the_threshold_and_allows_new_alleles(world):
    """The remedies, per run from the launchpad: the refused batches above append."""
    store = open_store(world.project.store_url)
    before = schema.num_samples(store.readonly_group())
    result = ingest(world, "low-coverage", {"min_site_coverage": 0.3})
    assert result.success, [e.description for e in check_evaluations(result).values()]
    assert materializations(result)["staged_batch"]["min_site_coverage"] == 0.3
    result = ingest(world, "new-alt", {"allow_new_alleles": True})
    assert result.success, [e.description for e in check_evaluations(result).values()]
    assert schema.num_samples(open_store(world.project.store_url).readonly_group()) == before + 8


def test_thresholds_from_the_environment(monkeypatch, tmp_path):
    from vczstore_dagster.defs.resources import resources_from_env

    monkeypatch.setenv("VCZSTORE_MIN_SITE_COVERAGE", "0.3")
    monkeypatch.setenv("VCZSTORE_MAX_DROPPED_FRACTION", "0.8")
    store = resources_from_env(tmp_path)["store"]
    assert (store.min_site_coverage, store.max_dropped_fraction) == (0.3, 0.8)
    monkeypatch.setenv("VCZSTORE_MIN_SITE_COVERAGE", "50%")
    with pytest.raises(ValueError, match="VCZSTORE_MIN_SITE_COVERAGE"):
        resources_from_env(tmp_path)
