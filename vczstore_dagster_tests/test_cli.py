"""The ``vczstore`` command line, run for real: click's CliRunner in-process, and the installed
console script in subprocesses for exit codes, the spawn guard and start-up cost.

Nothing is mocked: VCFs come from ``vczstore_dagster.testdata`` (plain ``.vcf``; ``convert``
bgzips and indexes them itself) and every command runs the engine on real stores.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from vczstore_dagster import testdata
from vczstore_dagster.cli import cli
from vczstore_dagster_tests import helpers

NUM_VARIANTS = 30
HEAVY_MODULES = ("zarr", "icechunk", "numpy", "bio2zarr", "dagster", "vcztools", "tqdm", "s3fs")


def run(*args, ok: bool | None = True, input: str | None = None):
    """Invoke the CLI in-process; ``ok=True`` asserts exit 0, ``False`` a non-zero exit."""
    result = CliRunner().invoke(cli, ["--no-progress", *map(str, args)], input=input)
    if ok is True:
        assert result.exit_code == 0, (
            f"vczstore {' '.join(map(str, args))} exited {result.exit_code}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}\n{result.exception!r}")
    return result


def vczstore(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """The installed console script."""
    return subprocess.run([helpers.venv_tool("vczstore"), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=helpers.REPO_ROOT)


def header_samples(vcf_text: str) -> list[str]:
    for line in vcf_text.splitlines():
        if line.startswith("#CHROM"):
            return line.split("\t")[9:]
    raise AssertionError("no #CHROM line in the VCF")


def records(vcf_text: str) -> list[list[str]]:
    return [line.split("\t") for line in vcf_text.splitlines() if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def vcfs(tmp_path_factory) -> dict[str, pathlib.Path]:
    """Plain (unindexed) VCFs: two batches over one variant set, and one over another set."""
    d = tmp_path_factory.mktemp("cli_vcfs")
    return {
        "b1": testdata.write_vcf(d / "b1.vcf", testdata.sample_names("A", 10),
                                 num_variants=NUM_VARIANTS, seed=1),
        "b2": testdata.write_vcf(d / "b2.vcf", testdata.sample_names("B", 6),
                                 num_variants=NUM_VARIANTS, seed=2),
        "other_sites": testdata.write_vcf(d / "other.vcf", testdata.sample_names("C", 3),
                                          num_variants=NUM_VARIANTS, sites_seed=7, seed=3),
    }


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, vcfs) -> pathlib.Path:
    """An Icechunk store of b1 made through the CLI; tests must not modify it."""
    d = tmp_path_factory.mktemp("cli_store")
    run("convert", vcfs["b1"], d / "b1.vcz", "--samples-chunk-size", 4)
    run("init", d / "store", "--from", d / "b1.vcz")
    return d / "store"


@pytest.fixture(scope="module")
def bad_batch(tmp_path_factory, vcfs) -> pathlib.Path:
    """A batch over a different variant set (positions and alleles differ)."""
    out = tmp_path_factory.mktemp("cli_bad") / "other.vcz"
    run("convert", vcfs["other_sites"], out, "--samples-chunk-size", 4)
    return out


# ------------------------------------------------------------------------------------------------
# The worked example
# ------------------------------------------------------------------------------------------------


def test_worked_flow(tmp_path, vcfs):
    b1, b2, store = tmp_path / "b1.vcz", tmp_path / "b2.vcz", tmp_path / "store"

    r = run("convert", vcfs["b1"], b1, "--samples-chunk-size", 4)
    assert f"10 samples, {NUM_VARIANTS} variants" in r.stdout

    r = run("init", store, "--from", b1)
    assert f"10 samples (batch b1), {NUM_VARIANTS} variants" in r.stdout
    init_snapshot = re.search(r"snapshot: (\S+)", r.stdout).group(1)

    # 10 samples in chunks of 4: the batch is laid out after the partial column's 2 samples
    r = run("convert", vcfs["b2"], b2, "--like", store)
    assert "6 samples" in r.stdout and "offset 2" in r.stdout

    r = run("check", store, b2)
    assert re.search(r"^info\s+fast_path\s", r.stdout, re.M), r.stdout
    assert not re.search(r"^error\s", r.stdout, re.M), r.stdout
    assert "compatible: 6 samples" in r.stdout

    r = run("append", store, b2, "--batch-id", "batch-2")
    assert "appended batch batch-2: samples 10 → 16 (+6)" in r.stdout
    assert "fast path: yes" in r.stdout
    copied, reencoded = map(int, re.search(r"chunks: (\d+) copied .*, (\d+) re-encoded",
                                           r.stdout).groups())
    assert copied > 0 and reencoded > 0  # one partial column re-encoded, the rest copied
    assert re.search(r"^snapshot: \S+", r.stdout, re.M)
    assert re.search(r"^time: [\d.]+ s", r.stdout, re.M)

    r = run("tag", store, "rel-1", "-m", "first release")
    assert "release rel-1" in r.stdout and "16 active samples" in r.stdout

    r = run("releases", store)
    header, row = r.stdout.splitlines()
    assert header.split() == ["NAME", "STATE", "SNAPSHOT", "TIME", "ACTIVE", "BATCHES", "REPLACES",
                              "REPLACED_BY"]
    name, state, _snapshot, _time, active, batches, replaces, replaced_by = row.split()
    assert (name, state, active, batches, replaces, replaced_by) == (
        "rel-1", "citable", "16", "b1,batch-2", "-", "-")

    notes = run("releases", store, "--notes", "rel-1").stdout
    assert notes.startswith("# Release rel-1")
    assert "Batch batch-2 appended: 6 samples" in notes and "first release" in notes

    r = run("info", store)
    assert f"variants:    {NUM_VARIANTS}" in r.stdout
    assert "16 total, 16 active (chunks of 4)" in r.stdout
    assert re.search(r"^\s+b1\s+0-9\s+10\s", r.stdout, re.M), r.stdout
    assert re.search(r"^\s+batch-2\s+10-15\s+6\s", r.stdout, re.M), r.stdout
    assert re.search(r"^releases:\s+rel-1$", r.stdout, re.M), r.stdout
    assert "call_genotype" in r.stdout and "last commit:" in r.stdout

    r = run("info", store, "--at", "rel-1")
    assert re.search(r"^at:\s+rel-1 \(snapshot ", r.stdout, re.M)
    r = run("info", store, "--at", init_snapshot)
    assert "10 total, 10 active" in r.stdout and "batches: 1" in r.stdout

    # view: the sample columns of the VCFs, in batch order, over every site
    expected = header_samples(vcfs["b1"].read_text()) + header_samples(vcfs["b2"].read_text())
    r = run("view", store)
    assert header_samples(r.stdout) == expected
    got = records(r.stdout)
    want = records(vcfs["b1"].read_text())
    assert [row[:2] for row in got] == [row[:2] for row in want]
    assert all(len(row) == 9 + 16 for row in got)
    r = run("view", store, "--at", init_snapshot)
    assert header_samples(r.stdout) == expected[:10]
    r = run("view", store, "--at", "rel-1")
    assert header_samples(r.stdout) == expected


def test_plain_zarr_store(tmp_path, vcfs):
    vcz, store = tmp_path / "b1.vcz", tmp_path / "store"
    run("convert", vcfs["b1"], vcz, "--samples-chunk-size", 5, "--variants-chunk-size", 10,
        "--zarr-format", 2)
    r = run("init", store, "--from", vcz, "--backend", "zarr", "--zarr-format", 2)
    assert "created zarr store" in r.stdout
    r = run("info", store, "--backend", "zarr")
    assert "(zarr, Zarr format 2)" in r.stdout and "(chunks of 10)" in r.stdout
    assert "10 total, 10 active (chunks of 5)" in r.stdout
    assert "no releases (plain Zarr" in run("releases", store).stdout
    r = run("tag", store, "r1", ok=False)
    assert r.exit_code == 1 and "Icechunk" in r.stderr
    r = run("info", store, "--backend", "icechunk", ok=False)
    assert r.exit_code == 1 and "is a zarr store, not icechunk" in r.stderr
    assert header_samples(run("view", store).stdout) == testdata.sample_names("A", 10)


def sites_only_vcf(path: pathlib.Path) -> pathlib.Path:
    """The shared sites with no FORMAT or sample columns (testdata.write_sites_vcf leaves an
    empty sample column that bcftools refuses)."""
    testdata.write_vcf(path, [], num_variants=NUM_VARIANTS)
    lines = [line if line.startswith("##") else "\t".join(line.split("\t")[:8])
             for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_init_variants_only_from_vcz(tmp_path, small_store, vcfs):
    """A zero-sample store from a VCZ's variants; the first batch then goes in by append."""
    store = tmp_path / "store"
    r = run("init", store, "--variants", small_store.parent / "b1.vcz")
    assert f"0 samples, {NUM_VARIANTS} variants" in r.stdout
    assert "0 total, 0 active (chunks of 4)" in run("info", store).stdout
    batch = tmp_path / "b2.vcz"
    run("convert", vcfs["b2"], batch, "--like", store)
    r = run("append", store, batch)
    assert "appended batch b2: samples 0 → 6 (+6)" in r.stdout
    assert header_samples(run("view", store).stdout) == testdata.sample_names("B", 6)


def test_init_variants_only_from_vcf(tmp_path):
    store = tmp_path / "store"
    r = run("init", store, "--variants", sites_only_vcf(tmp_path / "sites.vcf"),
            "--samples-chunk-size", 4)
    assert f"0 samples, {NUM_VARIANTS} variants" in r.stdout
    assert "0 total, 0 active (chunks of 4)" in run("info", store).stdout


def test_convert_like_after_tag(tmp_path, vcfs):
    vcz, store = tmp_path / "b1.vcz", tmp_path / "store"
    run("convert", vcfs["b1"], vcz, "--samples-chunk-size", 4)
    run("init", store, "--from", vcz)
    run("tag", store, "r1")
    run("convert", vcfs["b2"], tmp_path / "b2.vcz", "--like", store)
    assert "samples 10 → 16" in run("append", store, tmp_path / "b2.vcz").stdout


# ------------------------------------------------------------------------------------------------
# Refusals and errors
# ------------------------------------------------------------------------------------------------


def test_check_bad_batch_exits_1_naming_the_field(small_store, bad_batch):
    r = run("check", small_store, bad_batch, ok=False)
    assert r.exit_code == 1
    assert re.search(r"^error\s+variant_position\s+.*variant_position differs", r.stdout, re.M), \
        r.stdout
    assert "refused:" in r.stderr


def test_append_refused_leaves_store_unchanged(small_store, bad_batch):
    before = helpers.tree_digest(small_store)
    r = run("append", small_store, bad_batch, ok=False)
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "variant_position" in lines[0]
    assert "Traceback" not in r.output
    assert helpers.tree_digest(small_store) == before


def test_unknown_store_one_line_error(tmp_path):
    missing = tmp_path / "no-such-store"
    for args in (["info", missing], ["releases", missing], ["view", missing],
                 ["check", missing, tmp_path / "x.vcz"]):
        r = run(*args, ok=False)
        assert r.exit_code == 1, args
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), r.stderr
        assert str(missing) in r.stderr and r.stdout == ""
    r = run("-v", "info", missing, ok=False)
    assert r.exit_code == 1 and "Traceback" in r.stderr and "StoreNotFoundError" in r.stderr
    assert r.stderr.rstrip().splitlines()[-1].startswith("error: ")


def test_engine_input_errors(small_store, tmp_path):
    r = run("info", small_store, "--at", "no-such-release", ok=False)
    assert r.exit_code == 1 and "no-such-release" in r.stderr
    r = run("check", small_store, tmp_path / "missing.vcz", ok=False)
    assert r.exit_code == 1 and "no such file or directory" in r.stderr
    r = run("init", small_store, "--from", tmp_path / "missing.vcz", ok=False)
    assert r.exit_code == 1 and "already exists" in r.stderr
    r = run("info", small_store, "--storage-option", "endpoint_url=http://127.0.0.1:1", ok=False)
    assert r.exit_code == 1 and "s3:// stores only" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["init", "x"], "exactly one of --from"),
    (["init", "x", "--from", "a.vcz", "--variants", "b.vcf"], "exactly one of --from"),
    (["init", "x", "--variants", "b.vcf", "--batch-id", "b"], "--batch-id goes with --from"),
    (["convert", "a.vcf", "out.vcz", "--like", "s", "--samples-chunk-size", "3"], "not with --like"),
    (["convert", "out.vcz"], "Missing argument"),
    (["check", "s"], "Missing argument"),
    (["info", "s", "--storage-option", "endpoint_url"], "is not KEY=VALUE"),
    (["info", "s", "--storage-option", "colour=blue"], "unknown storage option 'colour'"),
    (["info", "s", "--backend", "sqlite"], "Invalid value for '--backend'"),
    (["remove", "s"], "at least one SAMPLE"),
    (["no-such-command"], "No such command"),
])
def test_usage_errors_exit_2(args, message):
    r = run(*args, ok=False)
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert message in r.stderr


def test_help_lists_every_command():
    r = run("--help")
    for command in ("init", "convert", "check", "append", "remove", "purge", "tag", "releases",
                    "info", "view", "widen"):
        assert re.search(rf"^  {command}\s", r.stdout, re.M), command
        sub = run(command, "--help")
        assert "Usage: " in sub.stdout
        assert "--storage-option KEY=VALUE" in sub.stdout, command
        writes = command in ("append", "remove", "purge", "tag", "widen")
        assert ("--lock-timeout SECONDS" in sub.stdout) == writes, command
    assert "--progress / --no-progress" in r.stdout


PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm's "append:  50%|█████     | 6/12"


def test_progress_before_or_after_the_command(tmp_path, vcfs, small_store):
    """--progress/--no-progress after the command name, overriding the group's; stderr is not a
    terminal here, so without either the bars are off."""
    def invoke(*args):
        result = CliRunner().invoke(cli, list(map(str, args)))
        assert result.exit_code == 0, (result.stderr, result.exception)
        return result

    r = invoke("--no-progress", "convert", "--progress", vcfs["b2"], tmp_path / "on.vcz",
               "--like", small_store)
    assert PROGRESS_BAR.search(r.stderr), r.stderr
    r = invoke("--progress", "convert", vcfs["b2"], tmp_path / "off.vcz", "--like", small_store,
               "--no-progress")
    assert not PROGRESS_BAR.search(r.stderr), r.stderr
    r = invoke("convert", vcfs["b2"], tmp_path / "default.vcz", "--like", small_store)
    assert not PROGRESS_BAR.search(r.stderr), r.stderr

    store = tmp_path / "store"
    invoke("init", "--no-progress", store, "--from", small_store.parent / "b1.vcz")
    r = invoke("append", store, tmp_path / "on.vcz", "--progress")
    assert PROGRESS_BAR.search(r.stderr) and "append" in r.stderr, r.stderr
    r = invoke("--progress", "remove", "--no-progress", store, testdata.sample_names("B", 6)[0])
    assert not PROGRESS_BAR.search(r.stderr), r.stderr
    for command in ("init", "convert", "append", "remove", "widen", "purge", "recompress"):
        assert "--progress / --no-progress" in invoke(command, "--help").stdout, command


# ------------------------------------------------------------------------------------------------
# The installed console script
# ------------------------------------------------------------------------------------------------


def test_help_imports_nothing_heavy():
    code = (
        "import sys\n"
        "import vczstore_dagster.cli as c\n"
        "assert c.main(['--help']) == 0\n"
        "assert c.main(['check', '--help']) == 0\n"
        f"heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=helpers.REPO_ROOT)
    assert proc.returncode == 0, proc.stderr


def test_console_script_exit_codes(small_store, bad_batch, tmp_path):
    proc = vczstore("--help")  # its start-up time is measured in benchmarks/ (bench_help)
    assert proc.returncode == 0 and "Commands:" in proc.stdout

    proc = vczstore("check")
    assert proc.returncode == 2 and "Missing argument" in proc.stderr

    proc = vczstore("info", tmp_path / "nowhere")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"error: {tmp_path / 'nowhere'}: no store there (neither an Icechunk repository nor a "
        "Zarr group)"]

    proc = vczstore("check", small_store, bad_batch)
    assert proc.returncode == 1 and "variant_position" in proc.stdout

    proc = vczstore("info", small_store)
    assert proc.returncode == 0 and "10 total, 10 active" in proc.stdout
    assert proc.stderr == ""  # no Icechunk or library warnings on the terminal


def test_console_script_convert_with_spawned_workers(vcfs, tmp_path):
    """bio2zarr's workers are spawned: they re-import the console script, which must stay inert."""
    out = tmp_path / "b2.vcz"
    proc = vczstore("--no-progress", "convert", vcfs["b2"], out, "--workers", 2,
                    "--samples-chunk-size", 4, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"6 samples, {NUM_VARIANTS} variants" in proc.stdout
    assert (out / "call_genotype").is_dir()


def test_s3_store(moto_s3, vcfs, tmp_path):
    vcz = tmp_path / "b1.vcz"
    run("convert", vcfs["b1"], vcz, "--samples-chunk-size", 4)
    url = moto_s3.new_url("cli")
    options = moto_s3.storage_option_args()
    r = run("init", url, "--from", vcz, *options)
    assert "created icechunk store s3://" in r.stdout
    r = run("info", url, *options)
    assert "10 total, 10 active" in r.stdout
    r = run("check", url, vcz, *options, ok=False)
    assert r.exit_code == 1 and re.search(r"^error\s+sample_id_in_store\s", r.stdout, re.M)
    assert header_samples(run("view", url, *options).stdout) == testdata.sample_names("A", 10)
    r = run("info", f"s3://{moto_s3.bucket}/nothing-here", *options, ok=False)
    assert r.exit_code == 1 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1


def test_remove_and_purge(tmp_path, vcfs):
    vcz, store = tmp_path / "b1.vcz", tmp_path / "store"
    run("convert", vcfs["b1"], vcz, "--samples-chunk-size", 4)
    run("init", store, "--from", vcz)
    run("tag", store, "2026-10")
    ids = testdata.sample_names("A", 10)
    request = tmp_path / "withdrawn.txt"
    request.write_text(f"# consent withdrawn\n{ids[1]}\n\n{ids[6]}\n")
    r = run("remove", store, "--from-file", request)
    assert r.stdout.splitlines()[0] == "removed 2 sample(s); 2 withdrawn in all"
    assert ids[1] not in r.stdout + r.stderr and ids[6] not in r.stdout + r.stderr
    r = run("purge", store)
    assert re.match(r"redacted release 2026-10 → 2026-10-r1 \(2 sample\(s\) removed; snapshot "
                    r"\w+\)\nexpired \d+ snapshot\(s\)", r.stdout), r.stdout
    assert ids[1] not in r.stdout + r.stderr
    r = run("releases", store)
    assert [line.split()[:2] for line in r.stdout.splitlines()[1:3]] == [
        ["2026-10", "replaced"], ["2026-10-r1", "citable"]]
    r = run("info", store, "--at", "2026-10", ok=False)
    assert r.exit_code == 1 and "release 2026-10 was replaced by 2026-10-r1" in r.stderr
    assert header_samples(run("view", store).stdout) == [s for s in ids if s not in (ids[1], ids[6])]
    assert header_samples(run("view", store, "--at", "2026-10-r1").stdout) == [
        s for s in ids if s not in (ids[1], ids[6])]
    r = run("remove", store, ids[1], ok=False)
    assert r.exit_code == 1 and "already removed" in r.stderr
