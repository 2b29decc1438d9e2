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


# ---------------------------------------------------------------------------------------------
# S3: a conflict forced at a known moment, the retry counted, the give-up error
# ---------------------------------------------------------------------------------------------


def _s3_store_and_batch(make_store, vcf_batch, tmp_path):
    first = vcf_batch("C", 10, num_variants=NV)
    store, url = make_store("s3", [first], samples_chunk_size=SCHUNK, variants_chunk_size=40,
                            batch_id="first")
    later = vcf_batch("A", 5, num_variants=NV)
    batch = tmp_path / "ba.vcz"
    helpers.convert_like(store, [later], batch)
    return store, url, first, later, batch


def test_s3_main_moved_before_publish_is_redone(make_store, vcf_batch, tmp_path):
    """The append is held after its commit, before its compare-and-swap; a real release moves
    main meanwhile; the swap fails and the append is redone from the new tip: two attempts."""
    from vczstore_dagster.store import open_store, store_info, tag_release

    store, url, first, later, batch = _s3_store_and_batch(make_store, vcf_batch, tmp_path)
    marker, until = tmp_path / "paused", tmp_path / "go"
    proc = helpers.start_append(store, batch, "ba", env=helpers.pause_env("publish", marker, until))
    with helpers.killing(proc):
        helpers.wait_for_pass(marker, 1, proc)
        moved = tag_release(store, "moved").snapshot_id
        helpers.release_pass(until, 1000)  # and every later pass
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-4000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["attempts"] == 2, result
    assert int(marker.read_text()) == 2  # the redo passed the point a second time

    fresh = open_store(url, storage_options=store.location.options)
    info = store_info(fresh)
    assert [(b.batch_id, b.parent_snapshot) for b in info.batches][1:] == [("ba", moved)]
    assert fresh.repo.lookup_tag("moved") == moved
    assert store_info(fresh, at="moved").num_samples == 10
    assert helpers.wip_branches(fresh) == set()
    helpers.assert_matches_bcftools(fresh, [first, later], cli=False)


def test_s3_gives_up_when_main_keeps_moving(make_store, vcf_batch, tmp_path):
    """Main moved before each of the allowed attempts published: a ConcurrentWriteError naming
    the attempts, nothing published, no temporary branch left."""
    from vczstore_dagster.store import open_store, store_info, tag_release

    store, url, first, _, batch = _s3_store_and_batch(make_store, vcf_batch, tmp_path)
    marker, until = tmp_path / "paused", tmp_path / "go"
    env = {**helpers.pause_env("publish", marker, until), "VCZSTORE_COMMIT_ATTEMPTS": "2"}
    proc = helpers.start_append(store, batch, "ba", env=env)
    with helpers.killing(proc):
        for n in (1, 2):
            helpers.wait_for_pass(marker, n, proc)
            tag_release(store, f"moved-{n}")
            helpers.release_pass(until, n)
        out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "ConcurrentWriteError" in err, err[-4000:]
    assert "append gave up after 2 attempts" in err, err[-4000:]
    fresh = open_store(url, storage_options=store.location.options)
    assert fresh.main_snapshot() == fresh.repo.lookup_tag("moved-2")
    assert [b.batch_id for b in store_info(fresh).batches] == ["first"]
    assert helpers.wip_branches(fresh) == set()


# ---------------------------------------------------------------------------------------------
# A local store: tag, appends and a removal at once, round after round
# ---------------------------------------------------------------------------------------------

ROUND_WORKER = """
import json, pathlib, sys, time, traceback
role, url, work, rounds = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]), int(sys.argv[4])
from vczstore_dagster.store import append_batch, open_store, tag_release
from vczstore_dagster.store.remove import remove_samples
for k in range(rounds):
    while not (work / f"go-{k}").exists():
        time.sleep(0.002)
    try:
        store = open_store(url)
        if role == "tag":
            r = tag_release(store, f"rel-{k}")
            out = {"snapshot": r.snapshot_id, "active": r.active_samples}
        elif role == "remove":
            remove_samples(store, [(work / f"remove-{k}.txt").read_text().strip()])
            out = {}
        else:
            r = append_batch(store, work / f"{role}-{k}.vcz", batch_id=f"{role}-{k}")
            out = {"samples_before": r.samples_before}
        out["ok"] = True
    except Exception as exc:
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
    (work / f"{role}-{k}.tmp").write_text(json.dumps(out))
    (work / f"{role}-{k}.tmp").replace(work / f"{role}-{k}.json")
"""
ROLES = ("append_a", "append_b", "tag", "remove")


def test_tag_appends_and_remove_at_once_lose_nothing(make_store, vcf_batch, tmp_path):
    """Each round, two appends, a release and a removal start together on one local store:
    every writer succeeds, every batch lands once, every release is tagged on a commit that holds
    what its record says. VCZSTORE_TEST_ROUNDS sets the rounds (by hand: 20 or more)."""
    import os
    import shutil
    import time

    import zarr

    from vczstore_dagster.store import list_releases, open_store, store_info

    rounds = int(os.environ.get("VCZSTORE_TEST_ROUNDS", "4"))
    first = vcf_batch("F", 24, num_variants=60)
    store, url = make_store("icechunk", [first], samples_chunk_size=SCHUNK,
                            variants_chunk_size=20, batch_id="first")
    work = tmp_path / "work"
    work.mkdir()
    template_vcf = vcf_batch("T", 3, num_variants=60)
    template = helpers.convert_like(store, [template_vcf], tmp_path / "template.vcz").path
    vcfs, removed = {}, []
    for k in range(rounds):
        for role in ROLES[:2]:
            names = [f"{role[-1].upper()}{k:03d}x{j}" for j in range(3)]
            shutil.copytree(template, work / f"{role}-{k}.vcz")
            zarr.open_group(str(work / f"{role}-{k}.vcz"), mode="r+")["sample_id"][:] = names
            renamed = tmp_path / f"{role}-{k}.vcf.gz"
            (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
            helpers.run(["bcftools", "reheader", "-s", tmp_path / "names.txt", "-o", renamed,
                         template_vcf])
            helpers.run(["bcftools", "index", "-f", renamed])
            vcfs[f"{role}-{k}"] = renamed
        removed.append(helpers.vcf_samples(first)[k])
        (work / f"remove-{k}.txt").write_text(removed[-1] + "\n")

    procs = {}
    with contextlib.ExitStack() as stack:
        for role in ROLES:
            procs[role] = helpers.engine_subprocess(ROUND_WORKER, role, url, work, rounds,
                                                    env={"VCZSTORE_WORKERS": "1"})
            stack.enter_context(helpers.killing(procs[role]))
        for k in range(rounds):
            (work / f"go-{k}").write_text("go")
            deadline = time.monotonic() + 300
            for role in ROLES:
                result = work / f"{role}-{k}.json"
                while not result.exists():
                    assert procs[role].poll() is None, procs[role].communicate()[1][-4000:]
                    assert time.monotonic() < deadline, f"round {k}: {role} did not finish"
                    time.sleep(0.01)
                out = json.loads(result.read_text())
                assert out["ok"], f"round {k}: {role} failed: {out['error']}\n{out['trace']}"
        for proc in procs.values():
            proc.wait(timeout=60)

    fresh = open_store(url)
    info = store_info(fresh)
    landed = [b.batch_id for b in info.batches]
    assert sorted(landed) == sorted(["first", *vcfs]), landed  # each batch exactly once
    releases = {r.name: r for r in list_releases(fresh)}
    assert sorted(releases) == sorted(f"rel-{k}" for k in range(rounds))
    for k in range(rounds):
        made = json.loads((work / f"tag-{k}.json").read_text())
        release = releases[f"rel-{k}"]
        assert release.state == "citable" and release.snapshot_id == made["snapshot"]
        at = store_info(fresh, at=f"rel-{k}")
        assert at.num_active_samples == release.active_samples == made["active"]
    assert helpers.wip_branches(fresh) == set()
    helpers.assert_matches_bcftools(fresh, [first, *(vcfs[b] for b in landed[1:])],
                                    removed=removed, cli=False)
