"""Consent withdrawal: remove, purge, redacted releases, and per-release statistics."""

from __future__ import annotations

import itertools
import json
import logging
import pathlib

import numcodecs
import numpy as np
import pytest

from vczstore_dagster.store import (
    IncompatibleBatchError,
    InvalidInputError,
    append_batch,
    list_releases,
    open_store,
    schema,
    store_info,
    tag_release,
)
from vczstore_dagster.store.purge import purge
from vczstore_dagster.store.release import release_notes
from vczstore_dagster.store.remove import remove_samples
from vczstore_dagster_tests import helpers

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def two_batch_store(make_store, vcf_batch, tmp_path, kind="icechunk", n1=12, n2=10, chunk=4):
    first = vcf_batch("W", n1, num_variants=60)
    second = vcf_batch("X", n2, num_variants=60)
    store, url = make_store(kind, [first], samples_chunk_size=chunk, variants_chunk_size=20)
    batch = helpers.convert_like(store, [second], tmp_path / "second.vcz")
    append_batch(store, batch.path, batch_id="second")
    return store, url, [first, second]


def ids_of(store, at=None):
    return list(schema.strings(store.readonly_group(at)["sample_id"][...]))


def raw_column_chunks(store, sample_index, at="main"):
    """The encoded bytes of every chunk in the sample-chunk column holding ``sample_index``."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    group = store.readonly_group(at)
    column = sample_index // schema.samples_chunk_size(group)
    out = []
    for name, array in schema.sample_arrays(group).items():
        axis = schema.sample_axis(array)
        grid = [range(-(-n // c)) for n, c in zip(array.shape, array.chunks, strict=True)]
        grid[axis] = [column]
        for coords in itertools.product(*grid):
            key = f"{name}/{array.metadata.encode_chunk_key(coords)}"
            buf = sync(array.async_array.store_path.store.get(key, prototype=default_buffer_prototype()))
            if buf is not None and len(buf.to_bytes()) >= 16:
                out.append(buf.to_bytes())
    return out


def storage_corpus(store, moto=None) -> list[bytes]:
    """Every object in the store's storage, raw and (where it holds a zstd frame) decompressed."""
    loc = store.location
    if loc.is_local:
        blobs = [p.read_bytes() for p in pathlib.Path(loc.path).rglob("*") if p.is_file()]
    else:
        client = moto.client()
        blobs = []
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=moto.bucket,
                                                                 Prefix=loc.prefix + "/")
        for page in pages:
            for obj in page.get("Contents", []):
                blobs.append(client.get_object(Bucket=moto.bucket, Key=obj["Key"])["Body"].read())
    out = []
    z = numcodecs.Zstd()
    for b in blobs:
        out.append(b)
        i = b.find(ZSTD_MAGIC)
        if i >= 0:
            try:
                out.append(bytes(z.decode(b[i:])))
            except Exception:
                pass
    return out


def found(needle: bytes, corpus: list[bytes]) -> bool:
    return any(needle in blob for blob in corpus)


def test_remove_matches_bcftools_without_the_samples(make_store, vcf_batch, tmp_path):
    store, _, vcfs = two_batch_store(make_store, vcf_batch, tmp_path)
    removed = ["W00001", "W00010", "X00003"]
    result = remove_samples(store, removed)
    assert result.num_removed == 3
    helpers.assert_matches_bcftools(store, vcfs, removed=removed)
    listed = helpers.run([helpers.venv_tool("vcztools"), "query", "-l", "--backend-storage",
                          "icechunk", store.location.path]).stdout.split()
    assert not set(listed) & set(removed)
    assert len(listed) == 22 - 3
    group = store.readonly_group()
    i = ids_of(store).index("")
    assert np.all(group["call_genotype"][:, i] == -1)
    assert np.all(group["call_genotype_mask"][:, i])
    assert not np.any(group["call_genotype_phased"][:, i])
    assert np.all(np.isnan(group["call_GQ"][:, i]))
    assert np.all(group["call_FT"][:, i] == ".")


def test_remove_unknown_sample_names_it_and_changes_nothing(make_store, vcf_batch, tmp_path):
    store, _, _ = two_batch_store(make_store, vcf_batch, tmp_path)
    before = helpers.store_digest(store)
    with pytest.raises(InvalidInputError, match="sample NOBODY is not in the store"):
        remove_samples(store, ["W00001", "NOBODY"])
    helpers.assert_unchanged(before, helpers.store_digest(store))


def test_remove_twice_says_already_removed(make_store, vcf_batch, tmp_path):
    store, _, _ = two_batch_store(make_store, vcf_batch, tmp_path)
    remove_samples(store, ["W00002"])
    before = helpers.store_digest(store)
    with pytest.raises(InvalidInputError, match="sample W00002 was already removed"):
        remove_samples(store, ["W00002"])
    helpers.assert_unchanged(before, helpers.store_digest(store))


def test_removing_many_samples_rewrites_each_touched_chunk_once(make_store, vcf_batch, tmp_path):
    first = vcf_batch("M", 200, num_variants=40)
    store, _ = make_store("icechunk", [first], samples_chunk_size=32, variants_chunk_size=20)
    ids = ids_of(store)
    # 100 samples, all within the first four of seven chunk columns
    chosen = sorted(np.random.default_rng(3).choice(128, size=100, replace=False).tolist())
    removed = [ids[i] for i in chosen]
    parent = store.main_snapshot()
    result = remove_samples(store, removed)
    per_column = helpers.chunks_per_sample_column(store)
    assert result.num_removed == 100
    assert result.columns_rewritten == 4
    assert result.chunks_rewritten == 4 * per_column
    diff = store.repo.diff(from_snapshot_id=parent, to_snapshot_id=result.snapshot_id)
    changed = sum(len(list(coords)) for coords in diff.updated_chunks.values())
    # every chunk the engine wrote shows up once in the diff (inline chunks included)
    assert changed <= result.chunks_rewritten
    assert changed >= result.chunks_rewritten - per_column  # all-fill chunks may be elided


def test_withdrawn_sample_can_never_be_appended_again(make_store, vcf_batch, tmp_path):
    store, _, _ = two_batch_store(make_store, vcf_batch, tmp_path)
    remove_samples(store, ["W00004", "X00001"])
    again = vcf_batch(samples=["Y00000", "W00004", "Y00001"], num_variants=60)
    batch = helpers.convert_like(store, [again], tmp_path / "again.vcz")
    before = helpers.store_digest(store)
    with pytest.raises(IncompatibleBatchError) as err:
        append_batch(store, batch.path, batch_id="again")
    message = str(err.value)
    assert "W00004" in message and "withdrawn" in message
    assert "X00001" not in message
    helpers.assert_unchanged(before, helpers.store_digest(store))


def test_release_statistics_equal_bcftools_fill_tags(make_store, vcf_batch, tmp_path):
    """AC, AN, AF, NS and the call rate of a release (over its active samples) are what
    ``bcftools +fill-tags`` computes on the VCFs less the removed samples (call rate: 1 -
    F_MISSING); the first batch's INFO fields are listed as stale once another batch is in."""
    store, url, vcfs = two_batch_store(make_store, vcf_batch, tmp_path)
    stale = ["variant_AC", "variant_AN", "variant_NS"]  # the INFO fields of the test VCFs
    assert store_info(store).stale_info_fields == stale
    shown = helpers.run([helpers.venv_tool("vczstore"), "info", url]).stdout
    assert "stale INFO:  variant_AC, variant_AN, variant_NS (out of date with the current " \
        "samples)" in shown, shown
    removed = ["W00000", "X00005"]
    remove_samples(store, removed)
    tag_release(store, "2026-11")
    truth = helpers.bcftools_truth(vcfs, removed)
    filled = helpers.run(["bcftools", "+fill-tags", "-", "--", "-t", "AC,AN,AF,NS,F_MISSING"],
                         input=truth).stdout
    expected = _info_by_site(filled, ("AC", "AN", "NS", "AF", "F_MISSING"))
    got = _info_by_site(helpers.vcztools_text_from_group(store.readonly_group("2026-11")),
                        ("AC", "AN", "NS", "AF", "call_rate"))
    assert expected.keys() == got.keys() and len(got) == 60
    for site, (ac, an, ns, af, missing) in expected.items():
        g_ac, g_an, g_ns, g_af, g_rate = got[site]
        assert (g_ac, g_an, g_ns) == (ac, an, ns), site
        assert _floats(g_af) == pytest.approx(_floats(af), abs=6e-4), site
        assert float(g_rate) == pytest.approx(1 - float(missing), abs=6e-4), site
    assert any(float(m) > 0 for *_, m in expected.values()), "some sites have missing calls"
    assert store_info(store).stale_info_fields == []


def _floats(text):
    return [float(x) for x in text.split(",")]


def _info_by_site(text, keys):
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        f = line.split("\t")
        info = dict(kv.split("=", 1) for kv in f[7].split(";") if "=" in kv)
        out[(f[0], f[1])] = tuple(info.get(k) for k in keys)
    return out


@pytest.mark.parametrize("kind", ["icechunk", "s3"])
def test_purge_forgets_removed_samples_everywhere(kind, make_store, vcf_batch, tmp_path, request,
                                                 caplog):
    moto = request.getfixturevalue("moto_s3") if kind == "s3" else None
    header_victim = "W00003"
    first = vcf_batch("W", 12, num_variants=60,
                      edit=lambda t: t.replace(
                          "##source=", f"##bcftools_viewCommand=view -s {header_victim},W00005 in.vcf\n##source=", 1))
    second = vcf_batch("X", 10, num_variants=60)
    store, _ = make_store(kind, [first], samples_chunk_size=4, variants_chunk_size=20)
    batch = helpers.convert_like(store, [second], tmp_path / "second.vcz")
    append_batch(store, batch.path, batch_id="second")
    tag_release(store, "2026-10")
    victim_index = ids_of(store).index(header_victim)
    old_chunks = raw_column_chunks(store, victim_index)
    assert old_chunks
    corpus = storage_corpus(store, moto)
    assert found(header_victim.encode(), corpus), "positive control: the scan must see the ID"
    assert all(found(c, corpus) for c in old_chunks), "positive control: the scan must see the chunks"

    caplog.set_level(logging.DEBUG)
    remove_samples(store, [header_victim])
    tag_release(store, "2026-11")
    result = purge(store)
    assert any(r.name.startswith("vczstore_dagster.store") for r in caplog.records), (
        "positive control: the engine's logs are captured")
    assert header_victim not in caplog.text

    assert [(r.release, r.replaced_by) for r in result.redacted] == [("2026-10", "2026-10-r1")]
    assert result.bytes_deleted > 0
    names = {r.name: r for r in list_releases(store)}
    assert {n: r.state for n, r in names.items()} == {
        "2026-10": "replaced", "2026-10-r1": "citable", "2026-11": "citable"}
    assert (names["2026-10"].replaced_by, names["2026-10"].snapshot_id) == ("2026-10-r1", None)
    assert names["2026-10-r1"].replaces == "2026-10"
    assert header_victim not in ids_of(store, "2026-10-r1")
    assert store_info(store, at="2026-10-r1").num_active_samples == 21
    helpers.assert_matches_bcftools(store.readonly_group("2026-10-r1"), [first, second],
                                    removed=[header_victim])
    corpus = storage_corpus(store, moto)
    assert not found(header_victim.encode(), corpus)
    leftover = [c for c in old_chunks if found(c, corpus)]
    # chunks of the column that do not depend on the removed sample (e.g. all hom-ref) may recur
    same_after = raw_column_chunks(store, victim_index)
    assert all(c in same_after for c in leftover)
    notes = release_notes(store, "2026-10-r1")
    assert "2026-10" in notes and header_victim not in notes


def test_a_replaced_release_says_so_everywhere(make_store, vcf_batch, tmp_path):
    """After a purge the ledger, `releases`, `info`, `info --at` and the notes say that 2026-10
    was replaced by 2026-10-r1 and when; the redacted notes count the withdrawals right and give
    both times; a second redaction chains on (r1 replaced by r2)."""
    from vczstore_dagster.store import ReleaseReplacedError

    store, url, _ = two_batch_store(make_store, vcf_batch, tmp_path)
    made = tag_release(store, "2026-10", message="October")
    original = {r.name: r for r in list_releases(store)}["2026-10"].time
    remove_samples(store, ["W00001", "X00002"])
    purge(store)

    releases = {r.name: r for r in list_releases(store)}
    old, new = releases["2026-10"], releases["2026-10-r1"]
    assert (old.state, old.citable, old.replaced_by, old.snapshot_id) == (
        "replaced", False, "2026-10-r1", None)
    assert (new.state, new.replaces, new.samples_redacted, new.active_samples) == (
        "citable", "2026-10", 2, 20)
    assert old.time == new.time == original, "the redacted release keeps its creation time"
    assert old.redacted_at == new.redacted_at and new.redacted_at > original
    assert new.message == "October" and made.active_samples == 22

    with pytest.raises(ReleaseReplacedError) as err:
        store_info(store, at="2026-10")
    assert str(err.value) == (
        f"{url}: release 2026-10 was replaced by 2026-10-r1 (redacted on {new.redacted_at}): "
        "samples withdrawn after it was made were removed; read or cite 2026-10-r1")
    assert err.value.replaced_by == "2026-10-r1"
    vczstore = helpers.venv_tool("vczstore")
    proc = helpers.run([vczstore, "info", url, "--at", "2026-10"], check=False)
    assert proc.returncode == 1 and "release 2026-10 was replaced by 2026-10-r1" in proc.stderr
    day = new.redacted_at[:10]
    shown = helpers.run([vczstore, "info", url]).stdout
    assert f"releases:    2026-10 (replaced by 2026-10-r1 on {day}; not citable), 2026-10-r1\n" \
        in shown, shown
    table = helpers.run([vczstore, "releases", url]).stdout.splitlines()
    assert table[0].split() == ["NAME", "STATE", "SNAPSHOT", "TIME", "ACTIVE", "BATCHES",
                                "REPLACES", "REPLACED_BY"]
    batches = ",".join(b.batch_id for b in store_info(store).batches)
    assert table[1].split() == ["2026-10", "replaced", "-", original, "22", batches, "-",
                                "2026-10-r1"]
    assert table[2].split()[:2] == ["2026-10-r1", "citable"]
    assert table[2].split()[4:] == ["20", batches, "2026-10", "-"]
    assert table[3] == f"2026-10: replaced by 2026-10-r1 on {day}; not citable"

    notes = release_notes(store, "2026-10-r1")
    assert f"- Created: {original} (as release 2026-10)\n- Redacted: {new.redacted_at}\n" in notes
    assert "- Withdrawals applied: 2 sample(s) (0 before the release was made, 2 removed when " \
        "it was redacted)" in notes
    assert f"- 2026-10 was replaced by 2026-10-r1 on {new.redacted_at}" in notes
    replaced_notes = release_notes(store, "2026-10")
    assert replaced_notes.startswith("# Release 2026-10 (replaced)\n")
    assert f"Replaced by **2026-10-r1** on {new.redacted_at}" in replaced_notes
    with pytest.raises(InvalidInputError, match="release 2026-10 was replaced by 2026-10-r1 when "
                                                "it was redacted; tag names cannot be reused"):
        tag_release(store, "2026-10")

    remove_samples(store, ["X00007"])
    purge(store)
    releases = {r.name: r for r in list_releases(store)}
    assert {n: (r.state, r.replaced_by) for n, r in releases.items()} == {
        "2026-10": ("replaced", "2026-10-r1"), "2026-10-r1": ("replaced", "2026-10-r2"),
        "2026-10-r2": ("citable", None)}
    r2 = releases["2026-10-r2"]
    assert (r2.replaces, r2.samples_redacted, r2.active_samples, r2.time) == (
        "2026-10-r1", 3, 19, original)
    assert "(as release 2026-10)" in release_notes(store, "2026-10-r2")


def test_purge_recomputes_redacted_release_statistics(make_store, vcf_batch, tmp_path):
    store, _, vcfs = two_batch_store(make_store, vcf_batch, tmp_path)
    tag_release(store, "r")
    remove_samples(store, ["X00002"])
    purge(store)
    truth = helpers.bcftools_truth(vcfs, ["X00002"])
    filled = helpers.run(["bcftools", "+fill-tags", "-", "--", "-t", "AC,AN"], input=truth).stdout
    got = _info_by_site(helpers.vcztools_text_from_group(store.readonly_group("r-r1")), ("AC", "AN"))
    assert _info_by_site(filled, ("AC", "AN")) == got


def test_remove_on_plain_zarr(make_store, vcf_batch, tmp_path):
    store, _, vcfs = two_batch_store(make_store, vcf_batch, tmp_path, kind="zarr3")
    remove_samples(store, ["X00000"])
    store = open_store(store.url)
    helpers.assert_matches_bcftools(store, vcfs, removed=["X00000"])
    assert purge(store).redacted == []


@pytest.mark.parametrize("release", [True, False], ids=["with-redaction", "no-release"])
def test_purge_beside_an_append_in_flight_on_s3(make_store, vcf_batch, tmp_path, moto_s3, release):
    """An append has written its chunks and waits to commit when a purge starts on S3 (no lock
    there). The purge waits for it instead of deleting its branch and collecting its chunks; the
    append succeeds (redone once when the purge's own commit moved main), its data reads back
    whole, and the withdrawn sample is gone from every object."""
    from vczstore_dagster.store import list_releases, open_store, store_info

    first = vcf_batch("W", 12, num_variants=60)
    second = vcf_batch("X", 8, num_variants=60)
    store, url = make_store("s3", [first], samples_chunk_size=4, variants_chunk_size=20,
                            batch_id="first")
    victim = "W00003"
    if release:
        tag_release(store, "2026-10")
    remove_samples(store, [victim])
    batch = helpers.convert_like(store, [second], tmp_path / "second.vcz").path
    assert found(victim.encode(), storage_corpus(store, moto_s3)), "positive control"

    marker, until = tmp_path / "paused", tmp_path / "go"
    append = helpers.start_append(store, batch, "second",
                                  env=helpers.pause_env("commit", marker, until))
    with helpers.killing(append):
        helpers.wait_for_pass(marker, 1, append)
        purging = helpers.vczstore_process("purge", url, "--grace", "300",
                                           *moto_s3.storage_option_args())
        with helpers.killing(purging):
            follower = helpers.StderrFollower(purging)
            follower.wait_for(r"waiting for 1 writer\(s\) in flight")
            helpers.release_pass(until, 1000)
            out, err = append.communicate(timeout=300)
            assert append.returncode == 0, err[-4000:]
            code, purged, purge_err = follower.finish()
    assert code == 0, purge_err
    assert "writers in flight waited for: 1" in purged, purged
    assert json.loads(out.strip().splitlines()[-1])["attempts"] == (2 if release else 1)

    fresh = open_store(url, storage_options=moto_s3.storage_options)
    assert [b.batch_id for b in store_info(fresh).batches] == ["first", "second"]
    helpers.assert_matches_bcftools(fresh, [first, second], removed=[victim], cli=False)
    if release:
        states = {r.name: r.state for r in list_releases(fresh)}
        assert states == {"2026-10": "replaced", "2026-10-r1": "citable"}
    assert helpers.wip_branches(fresh) == set()
    assert not found(victim.encode(), storage_corpus(fresh, moto_s3))


def test_purge_deletes_branches_of_dead_writers_on_s3(make_store, vcf_batch, moto_s3):
    """Temporary branches older than the grace period (or named before branch times were kept)
    belong to writers that died: a purge on S3 deletes them without waiting."""
    from vczstore_dagster.store.transaction import WIP_BRANCH_PREFIX

    store, _ = make_store("s3", [vcf_batch("W", 6, num_variants=60)], samples_chunk_size=4)
    head = store.main_snapshot()
    store.repo.create_branch(f"{WIP_BRANCH_PREFIX}20200101T000000Z-deadbeef", head)
    store.repo.create_branch(f"{WIP_BRANCH_PREFIX}0123456789ab", head)
    result = purge(store, grace_seconds=600)
    assert (result.abandoned_branches_deleted, result.writers_waited_for) == (2, 0)
    assert helpers.wip_branches(store) == set()
