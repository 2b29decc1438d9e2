"""Batches left in an inbox or staging area that still hold a withdrawn sample: found by the
engine (VCF headers, plain or bgzipped, and VCZ sample arrays; counts only), reported by
``vczstore purge --inbox`` and deleted with ``--delete-leftovers``."""

from __future__ import annotations

import shutil

from vczstore_dagster.store.leftovers import find_leftovers
from vczstore_dagster.store.remove import remove_samples
from vczstore_dagster_tests import helpers
from vczstore_dagster_tests.test_cli import run


def test_purge_names_then_deletes_batches_holding_withdrawn_samples(make_store, vcf_batch,
                                                                     tmp_path):
    first = vcf_batch("LO", 6)
    store, url = make_store("icechunk", [first])
    inbox = tmp_path / "inbox"
    (inbox / "as-vcf").mkdir(parents=True)
    shutil.copyfile(first, inbox / "as-vcf" / first.name)  # bgzipped
    (inbox / "as-vcz").mkdir()
    helpers.bio2zarr_convert([vcf_batch("LO", 3, start=4)], inbox / "as-vcz" / "part.vcz",
                             samples_chunk_size=2)
    (inbox / "unrelated").mkdir()
    shutil.copyfile(vcf_batch("UN", 3), inbox / "unrelated" / "u.vcf.gz")
    assert find_leftovers(store, str(inbox)) == []  # nothing withdrawn yet

    remove_samples(store, ["LO00001", "LO00005"])
    found = {f.name: (f.withdrawn, f.files) for f in find_leftovers(store, str(inbox))}
    assert found == {"as-vcf": (2, 1), "as-vcz": (1, 1)}

    reported = run("purge", url, "--inbox", inbox)
    assert "batch as-vcf holds 2 withdrawn sample(s) in 1 file(s)" in reported.output
    assert "batch as-vcz holds 1 withdrawn sample(s)" in reported.output
    assert "--delete-leftovers" in reported.output
    assert "LO0000" not in reported.output
    assert sorted(p.name for p in inbox.iterdir()) == ["as-vcf", "as-vcz", "unrelated"]

    deleted = run("purge", url, "--inbox", inbox, "--delete-leftovers")
    assert "deleted" in deleted.output
    assert sorted(p.name for p in inbox.iterdir()) == ["unrelated"]
    assert "no batch holds a withdrawn sample" in run("purge", url, "--inbox", inbox).output
