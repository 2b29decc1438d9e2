"""The conversion in steps (``store/convert.py``): four partitions give the batch one process gives,
byte for byte, and each step rerun after a crash (on what the killed step left behind) gives the
same batch."""

from __future__ import annotations

import os
import signal

import pytest

from vczstore_dagster.store import convert, convert_vcfs
from vczstore_dagster_tests.helpers import (
    assert_same_vcz,
    engine_subprocess,
    pause_env,
    tree_digest,
    wait_for_pass,
)

FINISH = """
import sys
from vczstore_dagster.store import convert, open_store
work, out, url = sys.argv[1:4]
convert.finish(work, out, open_store(url))
"""


@pytest.fixture
def batches(make_store, vcf_batch, tmp_path):
    """A store of 13 samples (chunks of 20 variants × 8 samples: the batch is laid out with an
    offset of 5), the next batch's VCF, and that batch converted in one process."""
    def make(kind):
        first, second = vcf_batch("A", 13), vcf_batch("B", 11)
        store, url = make_store(kind, [first], variants_chunk_size=20)
        single = convert_vcfs([second], tmp_path / "single.vcz", like=store)
        return store, url, second, single

    return make


@pytest.mark.parametrize("kind", ["icechunk", "zarr2"])
def test_four_partitions_give_the_batch_one_process_gives(kind, batches, tmp_path):
    store, _, vcf, single = batches(kind)
    work = tmp_path / "work"
    explode = convert.begin([vcf], work, partitions=4)
    assert explode.num_partitions == 2  # the index splits the VCF by contig, no finer
    for j in range(explode.num_partitions):
        assert convert.explode_partition(work, j).records > 0
    plan = convert.plan_encoding(work, store)
    assert (plan.num_partitions, plan.store_schema, plan.zarr_format) == (4, True, 3 if kind ==
                                                                          "icechunk" else 2)
    assert plan.max_encoding_memory > 0
    for j in range(plan.num_partitions):
        assert convert.encode_partition(work, j).pid == os.getpid()
    result = convert.finish(work, tmp_path / "steps.vcz", store)
    assert (result.partitions, result.explode_partitions) == (4, 2)
    assert (result.num_samples, result.sample_offset, result.misfit) == (11, 5, None)
    assert result.harmonisation is not None
    assert_same_vcz(single.path, result.path)
    assert tree_digest(result.path) == tree_digest(single.path)
    # every copy of the batch but the staged one is gone (the ICF holds its sample IDs)
    assert sorted(p.name for p in work.iterdir()) == [
        "conversion.json", "encoding.json", "result.json", "schema.json"]


def test_each_step_rerun_after_a_crash_gives_the_same_batch(batches, tmp_path):
    from bio2zarr import vcf, vcz

    store, url, batch_vcf, single = batches("icechunk")
    work, out = tmp_path / "work", tmp_path / "steps.vcz"
    explode = convert.begin([batch_vcf], work, partitions=4)
    # explode partition 0 killed while writing: a chunk cut short, its summary not written yet
    convert.explode_partition(work, 0)
    (work / convert.ICF / "wip" / "p0.json").unlink()
    chunk = next(p for p in (work / convert.ICF / "POS" / "p0").iterdir() if p.name != "chunk_index")
    chunk.write_bytes(chunk.read_bytes()[:5])
    for j in range(explode.num_partitions):
        convert.explode_partition(work, j)
    convert.plan_encoding(work, store)
    # the planning step died after its work: rerun, it finalises the ICF only once
    plan = convert.plan_encoding(work, store)
    writer = vcz.VcfZarrWriter(vcf.IntermediateColumnarFormat, work / convert.ENCODED)
    writer.load_metadata()
    # encode partition 1 killed while writing: some of its arrays written, one chunk cut short
    writer.encode_alleles_and_genotypes_partition(1)
    cut = next(p for p in (writer.wip_partition_path(1) / "call_genotype").rglob("*") if p.is_file()
               and p.parent.name != "call_genotype")
    cut.write_bytes(b"\0")
    # encode partition 2 done, then killed while written again
    convert.encode_partition(work, 2)
    writer.encode_id_partition(2)
    for j in range(plan.num_partitions):
        convert.encode_partition(work, j)
    # finish killed after finalising (bio2zarr moved the chunks out of the partitions)
    marker = tmp_path / "marker"
    proc = engine_subprocess(FINISH, work, out, url, env=pause_env("finalised", marker))
    try:
        wait_for_pass(marker, 1, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert (work / convert.FINALISING / "call_genotype").exists() and not out.exists()
    result = convert.finish(work, out, store)
    assert_same_vcz(single.path, out)
    assert tree_digest(out) == tree_digest(single.path)
    # finish died after writing the batch: its rerun gives the same result and leaves the batch
    again = convert.finish(work, out, store)
    assert (again.num_samples, again.sample_offset, again.partitions) == (11, 5, 4)
    assert again.harmonisation == result.harmonisation
    assert tree_digest(out) == tree_digest(single.path)
