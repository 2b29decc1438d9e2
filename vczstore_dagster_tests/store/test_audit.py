"""Each operation's audit refuses a commit that is not what it should be, for real: main does not
move. The faults are real ones, made while the writer is held at a pause point of the engine:
a batch rewritten by another process while it is appended, a store whose sample IDs were
corrupted by another tool, a chunk of a widened field corrupted in storage before the audit."""

from __future__ import annotations

import pathlib
import shutil

import numpy as np
import pytest
import zarr

from vczstore_dagster_tests import helpers


def _main(url):
    from vczstore_dagster.store import open_store, store_info

    store = open_store(url)
    info = store_info(store)
    return {"snapshot": store.main_snapshot(), "samples": helpers.sample_ids(store),
            "batches": [b.batch_id for b in info.batches],
            "dtypes": {n: str(a.dtype) for n, a in store.readonly_group().arrays()}}


def test_append_audit_refuses_a_batch_rewritten_under_it(make_store, vcf_batch, tmp_path):
    """Another process rewrites the batch's sample IDs after the check, while the append runs:
    what lands is not the batch that was checked, and the audit says so."""
    first = vcf_batch("U", 10, num_variants=60)
    store, url = make_store("icechunk", [first], samples_chunk_size=8, variants_chunk_size=20)
    batch = helpers.convert_like(store, [vcf_batch("V", 6, num_variants=60)],
                                 tmp_path / "v.vcz").path
    before = _main(url)
    marker, until = tmp_path / "paused", tmp_path / "go"
    proc = helpers.start_append(store, batch, "v", env=helpers.pause_env("write", marker, until))
    with helpers.killing(proc):
        helpers.wait_for_pass(marker, 1, proc)
        group = zarr.open_group(str(batch), mode="r+")
        group["sample_id"][:] = [f"Z{i:05d}" for i in range(group["sample_id"].shape[0])]
        helpers.release_pass(until, 1)
        _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "AuditError: audit: the appended sample ids differ from the batch's" in err, err[-3000:]
    assert _main(url) == before
    assert helpers.wip_branches(store) == set()


def test_remove_audit_refuses_when_a_removed_id_survives(make_store, vcf_batch):
    """A store whose sample IDs another tool corrupted (one ID twice): the removal blanks one
    slot, the audit finds the ID still there, and main keeps the corrupt state for the operator
    to repair rather than a removal that did not remove."""
    from vczstore_dagster.store import AuditError
    from vczstore_dagster.store.remove import remove_samples

    store, url = make_store("icechunk", [vcf_batch("R", 10, num_variants=60)],
                            samples_chunk_size=8, variants_chunk_size=20)
    ids = helpers.sample_ids(store)
    session = store.repo.writable_session("main")
    zarr.open_group(session.store, mode="r+")["sample_id"][2] = ids[7]
    session.commit("a faulty tool copied one sample ID over another")
    before = _main(url)
    assert before["samples"].count(ids[7]) == 2
    with pytest.raises(AuditError, match="^audit: a removed sample id is still in the store$"):
        remove_samples(store, [ids[7]])
    assert _main(url) == before
    assert helpers.wip_branches(store) == set()


WIDEN = """
import sys
from vczstore_dagster.store import open_store
from vczstore_dagster.store.widen import widen_field
widen_field(open_store(sys.argv[1]), "call_DP", "int32")
"""


def test_widen_audit_refuses_a_field_that_reads_back_wrong(make_store, vcf_batch, tmp_path):
    """Between the widen's commit and its audit, a chunk the widen wrote is corrupted in storage
    (another chunk of the field in its place): the audit reads the field back, finds the values
    changed, and main keeps the old type."""
    store, url = make_store("icechunk", [vcf_batch("D", 16, num_variants=100)],
                            samples_chunk_size=8, variants_chunk_size=100)
    before = _main(url)
    chunk_dir = pathlib.Path(url) / "chunks"
    old = set(chunk_dir.iterdir())
    marker, until = tmp_path / "paused", tmp_path / "go"
    proc = helpers.engine_subprocess(WIDEN, url, env=helpers.pause_env("publish", marker, until))
    with helpers.killing(proc):
        helpers.wait_for_pass(marker, 1, proc)
        new = sorted(set(chunk_dir.iterdir()) - old, key=lambda p: p.stat().st_size)
        assert len(new) == 2, new  # call_DP: 1 variant chunk x 2 sample columns, int32
        shorter, longer = (p.read_bytes() for p in new)
        assert shorter != longer
        new[1].write_bytes(shorter + bytes(len(longer) - len(shorter)))  # still decodes
        shutil.copystat(new[0], new[1])
        helpers.release_pass(until, 1)
        _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert ("AuditError: audit: call_DP read back after widening differs from its values "
            "before, at variants 0-99 and samples ") in err, err[-3000:]
    after = _main(url)
    assert after == before and after["dtypes"]["call_DP"] != "int32"
    assert np.dtype(before["dtypes"]["call_DP"]).itemsize < 4
