"""SIGKILL a writer at named points of its work: an append while it writes chunks, before its
commit, between its commit and the move of main, and after main moved; a release between main
moving and its tag; a purge between tagging a redacted release and deleting the old one, and
before it collects garbage. Afterwards the store opens and equals the state before or the state
after, never a mix, and running the same command again finishes the job.

The engine pauses at a named point when ``VCZSTORE_TEST_PAUSE_AT=POINT`` is set, after writing
its pass number to ``VCZSTORE_TEST_PAUSE_MARKER`` (``transaction.pause_for_tests``); the test
checks the store at that moment (so the kill provably lands inside the window) and kills it.
"""

from __future__ import annotations

import os
import signal

import pytest

from vczstore_dagster_tests import helpers

NV = 120
SCHUNK = 8


@pytest.fixture
def crash_setup(make_store, vcf_batch, tmp_path, request):
    """A store of 10 samples (a partial chunk column) and a 20-sample batch laid out for it."""

    def setup(kind):
        first = vcf_batch("K", 10, num_variants=NV)
        store, url = make_store(kind, [first], samples_chunk_size=SCHUNK, variants_chunk_size=40)
        later = vcf_batch("K", 20, start=10, num_variants=NV)
        batch = tmp_path / "later.vcz"
        helpers.convert_like(store, [later], batch)
        moto = request.getfixturevalue("moto_s3") if kind == "s3" else None
        return store, url, first, later, batch, moto

    return setup


def _state(store):
    """What a reader sees at main: the snapshot (Icechunk), sample ids and the ledger's batches."""
    from vczstore_dagster.store import open_store, store_info

    fresh = open_store(store.url, storage_options=None if store.location.is_local
                       else store.location.options)
    info = store_info(fresh)
    return fresh, {
        "snapshot": fresh.main_snapshot(),
        "samples": helpers.sample_ids(fresh),
        "batches": [(b.batch_id, b.sample_start, b.sample_stop) for b in info.batches],
    }


def _kill(process):
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def _assert_before(store, before, first):
    fresh, state = _state(store)
    assert state == before, f"store changed by a killed append: {state} != {before}"
    if state["snapshot"] is None:
        # plain Zarr: no snapshot id to vouch for the content; read it all
        helpers.assert_matches_bcftools(fresh, [first], cli=False)
    return fresh


def _assert_after(store, before, first, later):
    fresh, state = _state(store)
    assert state["samples"][: len(before["samples"])] == before["samples"]
    assert len(state["samples"]) == len(before["samples"]) + 20
    assert [b[0] for b in state["batches"]].count("later") == 1
    helpers.assert_matches_bcftools(fresh, [first, later], cli=False)
    return fresh


def _recover_and_append(store, batch, first, later, before):
    """The next writer finds a usable store (no stale lock, no half state) and appends."""
    from vczstore_dagster.store import append_batch, open_store

    fresh = open_store(store.url, storage_options=None if store.location.is_local
                       else store.location.options)
    append_batch(fresh, batch, batch_id="later")
    _assert_after(fresh, before, first, later)


@pytest.mark.parametrize("kind", ["icechunk", "s3"])
@pytest.mark.parametrize("point", ["chunks", "commit"])
def test_sigkill_append(crash_setup, tmp_path, kind, point):
    store, url, first, later, batch, moto = crash_setup(kind)
    _, before = _state(store)
    keys_before = helpers.storage_keys(store, moto)
    marker = tmp_path / "paused"
    process = helpers.start_append(store, batch, "later", env=helpers.pause_env(point, marker))
    with helpers.killing(process):
        helpers.wait_for_pass(marker, 1, process)
        written = helpers.storage_keys(store, moto) - keys_before
        new_chunks = [k for k in written if k.startswith("chunks/")]
        # killed in the middle: the writer had already written chunks of the new batch
        assert new_chunks, f"nothing written before the pause at {point}: {sorted(written)[:10]}"
        _kill(process)
    _assert_before(store, before, first)
    _recover_and_append(store, batch, first, later, before)


@pytest.mark.parametrize("point, outcome", [("publish", "before"), ("published", "after")])
def test_sigkill_inside_the_commit_window(crash_setup, tmp_path, point, outcome):
    """Killed after its commit was written and before main moved ("publish"): main is as before.
    Killed after main moved and before the temporary branch was deleted ("published"): the
    append is in. The store is checked at the pause, so the kill provably lands in that window."""
    from vczstore_dagster.store import open_store
    from vczstore_dagster.store.purge import purge

    store, url, first, later, batch, _ = crash_setup("icechunk")
    _, before = _state(store)
    marker = tmp_path / "paused"
    process = helpers.start_append(store, batch, "later", env=helpers.pause_env(point, marker))
    with helpers.killing(process):
        helpers.wait_for_pass(marker, 1, process)
        fresh = open_store(url)
        [wip] = helpers.wip_branches(fresh)
        committed = fresh.repo.lookup_branch(wip)
        assert committed != before["snapshot"], "the commit is written at this point"
        assert fresh.main_snapshot() == (before["snapshot"] if point == "publish" else committed)
        _kill(process)
    if outcome == "before":
        _assert_before(store, before, first)
        _recover_and_append(store, batch, first, later, before)
    else:
        _assert_after(store, before, first, later)
    # the killed writer's temporary branch stays until a purge deletes it (under the lock)
    fresh = open_store(url)
    assert helpers.wip_branches(fresh) == {wip}
    assert purge(fresh).abandoned_branches_deleted == 1
    assert helpers.wip_branches(fresh) == set()
    _assert_after(fresh, before, first, later)


def _releases(store):
    from vczstore_dagster.store import list_releases, open_store

    return {r.name: r for r in list_releases(open_store(store.url))}


def test_sigkill_tag_between_main_and_its_tag(crash_setup, tmp_path):
    """`tag` killed after main moved and before the tag was created: the release shows as
    incomplete (not missing from `releases` while `info` lists it), and the same `tag` again
    completes it on the commit made for it, even after another append moved main."""
    from vczstore_dagster.store import append_batch, open_store, store_info

    store, url, first, later, batch, _ = crash_setup("icechunk")
    marker = tmp_path / "paused"
    process = helpers.vczstore_process("tag", url, "rel1", "-m", "first",
                                       env=helpers.pause_env("published", marker))
    with helpers.killing(process):
        helpers.wait_for_pass(marker, 1, process)
        fresh = open_store(url)
        release_commit = fresh.main_snapshot()
        assert fresh.repo.lookup_snapshot(release_commit).message == "release rel1"
        assert "rel1" not in fresh.repo.list_tags()
        _kill(process)

    fresh = open_store(url)
    rel = _releases(fresh)["rel1"]
    assert (rel.state, rel.snapshot_id, rel.citable) == ("incomplete", release_commit, False)
    assert [r.name for r in store_info(fresh).releases] == ["rel1"]
    info = helpers.run([helpers.venv_tool("vczstore"), "info", url]).stdout
    assert "rel1 (incomplete:" in info, info
    append_batch(fresh, batch, batch_id="later")  # main moves on before anyone notices

    done = helpers.run([helpers.venv_tool("vczstore"), "tag", url, "rel1"])
    assert "completed the interrupted release" in done.stdout, done.stdout
    fresh = open_store(url)
    assert fresh.repo.lookup_tag("rel1") == release_commit
    rel = _releases(fresh)["rel1"]
    assert (rel.state, rel.active_samples, rel.message) == ("citable", 10, "first")
    assert helpers.sample_ids(fresh, "rel1") == helpers.vcf_samples(first)
    _assert_after(fresh, {"samples": helpers.vcf_samples(first)}, first, later)
    again = helpers.run([helpers.venv_tool("vczstore"), "tag", url, "rel1"], check=False)
    assert again.returncode == 1 and "release rel1 already exists" in again.stderr


def test_purge_completes_an_interrupted_tag(crash_setup, tmp_path):
    """A purge that finds a release without its tag tags its commit before expiring history."""
    from vczstore_dagster.store import open_store
    from vczstore_dagster.store.purge import purge

    store, url, *_ = crash_setup("icechunk")
    marker = tmp_path / "paused"
    process = helpers.vczstore_process("tag", url, "rel1", env=helpers.pause_env("published", marker))
    with helpers.killing(process):
        helpers.wait_for_pass(marker, 1, process)
        release_commit = open_store(url).main_snapshot()
        _kill(process)
    fresh = open_store(url)
    result = purge(fresh)
    assert result.releases_completed == ["rel1"]
    assert fresh.repo.lookup_tag("rel1") == release_commit
    assert _releases(fresh)["rel1"].state == "citable"


@pytest.mark.parametrize("point", ["redacted", "collect"])
def test_sigkill_purge_then_rerun_finishes_it(crash_setup, tmp_path, point):
    """`purge` killed after tagging the redacted copy and before deleting the old release
    ("redacted"), or before collecting garbage ("collect"): the rerun finishes that redaction
    (no second copy), records it in main's ledger and forgets the withdrawn sample."""
    from vczstore_dagster.store import open_store, tag_release
    from vczstore_dagster.store.purge import purge
    from vczstore_dagster.store.release import release_notes
    from vczstore_dagster.store.remove import remove_samples
    from vczstore_dagster_tests.store.test_withdrawal import found, storage_corpus

    store, url, first, *_ = crash_setup("icechunk")
    victim = helpers.vcf_samples(first)[3]
    tag_release(store, "rel1")
    remove_samples(store, [victim])
    marker = tmp_path / "paused"
    process = helpers.vczstore_process("purge", url, env=helpers.pause_env(point, marker))
    with helpers.killing(process):
        helpers.wait_for_pass(marker, 1, process)
        _kill(process)

    fresh = open_store(url)
    releases = _releases(fresh)
    if point == "redacted":
        assert fresh.repo.list_tags() == {"rel1", "rel1-r1"}
        # the old tag is still there, yet it is shown as what it is: replaced
        assert (releases["rel1"].state, releases["rel1"].replaced_by) == ("replaced", "rel1-r1")
    else:
        assert fresh.repo.list_tags() == {"rel1-r1"}
    assert releases["rel1-r1"].state == "citable"
    assert found(victim.encode(), storage_corpus(fresh)), "the killed purge collected nothing"

    result = purge(fresh)
    if point == "redacted":
        assert [(r.release, r.replaced_by, r.resumed, r.samples_removed)
                for r in result.redacted] == [("rel1", "rel1-r1", True, 1)]
    else:
        assert result.redacted == []
    assert fresh.repo.list_tags() == {"rel1-r1"}
    releases = _releases(fresh)
    assert sorted(releases) == ["rel1", "rel1-r1"]
    assert (releases["rel1"].state, releases["rel1"].replaced_by) == ("replaced", "rel1-r1")
    assert releases["rel1-r1"].replaces == "rel1" and releases["rel1-r1"].active_samples == 9
    assert not found(victim.encode(), storage_corpus(fresh))
    assert "Withdrawals applied: 1 sample(s) (0 before the release was made, 1 removed when it " \
        "was redacted)" in release_notes(fresh, "rel1-r1")
    assert purge(fresh).redacted == []  # nothing left to do


@pytest.mark.parametrize("point", ["chunks", "commit"])
def test_sigkill_append_plain_zarr(crash_setup, tmp_path, point):
    """Plain Zarr has no transactions; its commit point is the consolidated metadata. Readers
    must see the state before, and the next append must start from it."""
    store, url, first, later, batch, _ = crash_setup("zarr3")
    _, before = _state(store)
    marker = tmp_path / "paused"
    process = helpers.start_append(store, batch, "later", env=helpers.pause_env(point, marker))
    with helpers.killing(process):
        helpers.wait_for_pass(marker, 1, process)
        _kill(process)
    _assert_before(store, before, first)
    _recover_and_append(store, batch, first, later, before)
