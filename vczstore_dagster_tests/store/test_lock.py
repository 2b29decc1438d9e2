"""The writer's lock on a local store: a writer that has to wait says so and for whom, gives up
after the lock timeout (CLI option or environment) with the store untouched, or goes on once the
holder is done. The holder is a real append held at the engine's ``write`` pause point."""

from __future__ import annotations

import json
import re
import socket

import pytest

from vczstore_dagster_tests import helpers


@pytest.fixture
def held_store(make_store, vcf_batch, tmp_path):
    """A local store whose lock is held by an append paused just after taking it."""
    first = vcf_batch("L", 10, num_variants=60)
    store, url = make_store("icechunk", [first], samples_chunk_size=8, variants_chunk_size=20)
    later = vcf_batch("M", 4, num_variants=60)
    batch = helpers.convert_like(store, [later], tmp_path / "later.vcz").path
    marker, until = tmp_path / "paused", tmp_path / "go"
    holder = helpers.start_append(store, batch, "held",
                                  env=helpers.pause_env("write", marker, until))
    with helpers.killing(holder):
        helpers.wait_for_pass(marker, 1, holder)
        yield store, url, holder, until, helpers.vcf_samples(first) + helpers.vcf_samples(later)


def test_lock_file_names_its_holder_and_no_sample(held_store):
    store, url, holder, _, sample_ids = held_store
    text = open(url + ".lock").read()
    info = json.loads(text)
    assert info["pid"] == holder.pid
    assert (info["operation"], info["host"]) == ("append", socket.gethostname())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", info["since"]), info
    assert not [s for s in sample_ids if s in text]


def _who(holder) -> str:
    return rf"held by append \(pid {holder.pid} on {re.escape(socket.gethostname())}, since "


@pytest.mark.parametrize("how", ["option", "environment"])
def test_waiting_writer_gives_up_after_the_lock_timeout(held_store, how):
    store, url, holder, _, sample_ids = held_store
    before = helpers.tree_digest(url)
    if how == "option":
        proc = helpers.vczstore_process("tag", url, "r1", "--lock-timeout", "1")
        what, waited = "release", "1 s"
    else:
        proc = helpers.vczstore_process("remove", url, sample_ids[0],
                                        env={"VCZSTORE_LOCK_TIMEOUT": "0.5"})
        what, waited = "remove", "0.5 s"
    code, out, err = helpers.StderrFollower(proc).finish(timeout=120)
    assert code == 1, (out, err)
    lines = err.strip().splitlines()
    assert re.fullmatch(rf"warning: {what} waits for the store's lock {re.escape(url)}\.lock, "
                        rf"{_who(holder)}\S+\); giving up after {waited}", lines[0]), err
    assert re.fullmatch(rf"error: {re.escape(url)}\.lock: gave up {what} after waiting \d\.\d s "
                        rf"for the store's lock, {_who(holder)}\S+\)\. Run it again once that "
                        r"has finished, or wait longer \(--lock-timeout SECONDS or "
                        r"VCZSTORE_LOCK_TIMEOUT\)", lines[-1]), err
    assert not [s for s in sample_ids[1:] if s in err]
    helpers.assert_unchanged(before, helpers.tree_digest(url))
    assert holder.poll() is None, "the holder is still there, holding the lock"


def test_waiting_writer_goes_on_when_the_holder_is_done(held_store):
    from vczstore_dagster.store import list_releases, open_store

    store, url, holder, until, sample_ids = held_store
    proc = helpers.vczstore_process("tag", url, "r1")
    follower = helpers.StderrFollower(proc)
    line = follower.wait_for("waits for the store's lock")
    assert re.search(_who(holder), line), line
    assert proc.poll() is None
    helpers.release_pass(until, 1)
    out, err = holder.communicate(timeout=300)
    assert holder.returncode == 0, err[-4000:]
    code, out, err = follower.finish(timeout=300)
    assert code == 0, err
    assert "release r1: snapshot" in out
    # the release came after the append it waited for
    [release] = list_releases(open_store(url))
    assert (release.name, release.active_samples) == ("r1", len(sample_ids))
    assert open(url + ".lock").read() == "", "a finished writer leaves no holder behind"


def test_lock_timeout_must_be_seconds(held_store, monkeypatch):
    from vczstore_dagster.store import InvalidInputError, open_store, tag_release

    store, url, *_ = held_store
    monkeypatch.setenv("VCZSTORE_LOCK_TIMEOUT", "soon")
    with pytest.raises(InvalidInputError, match="VCZSTORE_LOCK_TIMEOUT='soon' is not a number of seconds"):
        tag_release(open_store(url), "r1")
