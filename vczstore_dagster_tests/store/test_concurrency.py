"""Two processes append different batches to one store at the same moment: both batches end up in
the store exactly once (local Icechunk: the engine's lock; S3: compare-and-swap and retry)."""

from __future__ import annotations

import contextlib
import json

import pytest

from vczstore_dagster_tests import helpers

NV = 120
SCHUNK = 8


@pytest.mark.parametrize("kind", ["icechunk", "s3"])
def test_two_writers_at_once(make_store, vcf_batch, tmp_path, kind):
    from vczstore_dagster.store import store_info

    first = vcf_batch("C", 10, num_variants=NV)
    store, url = make_store(kind, [first], samples_chunk_size=SCHUNK, variants_chunk_size=40,
                            batch_id="first")
    vcfs = {"ba": vcf_batch("A", 5, num_variants=NV), "bb": vcf_batch("B", 7, num_variants=NV)}
    batches = {}
    for name, vcf in vcfs.items():
        # both laid out for the store as it is now (10 samples); whichever lands second finds
        # the store grown and must still place its samples right
        batches[name] = tmp_path / f"{name}.vcz"
        helpers.convert_like(store, [vcf], batches[name])

    go = tmp_path / "go"
    outputs = {}
    with contextlib.ExitStack() as stack:
        procs = {}
        for name in vcfs:
            ready = tmp_path / f"{name}.ready"
            proc = helpers.start_append(store, batches[name], name, ready, go)
            stack.enter_context(helpers.killing(proc))
            procs[name] = (proc, ready)
        for proc, ready in procs.values():
            helpers.wait_for_file(ready, proc, timeout=120)
        go.write_text("go")  # both are imported, open and waiting: release them together
        for name, (proc, _) in procs.items():
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"writer {name} failed:\n{err[-4000:]}"
            outputs[name] = json.loads(out.strip().splitlines()[-1])

    # the two appends were serialised: one saw 10 samples, the other 10 + the first's
    befores = sorted(o["samples_before"] for o in outputs.values())
    assert befores[0] == 10 and befores[1] in (15, 17), outputs

    from vczstore_dagster.store import open_store

    fresh = open_store(url, storage_options=store.location.options or None)
    ids = helpers.sample_ids(fresh)
    assert len(ids) == 22 and len(set(ids)) == 22, ids
    info = store_info(fresh)
    landed = [b.batch_id for b in info.batches]
    assert sorted(landed) == ["ba", "bb", "first"], landed  # each exactly once
    landed.remove("first")
    ranges = {b.batch_id: (b.sample_start, b.sample_stop) for b in info.batches}
    assert ranges[landed[0]][0] == 10 and ranges[landed[1]][1] == 22, ranges
    order = [vcfs[b] for b in landed]
    helpers.assert_matches_bcftools(fresh, [first, *order], cli=False)
