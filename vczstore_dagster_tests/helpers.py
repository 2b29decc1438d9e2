"""Test helpers shared by the whole suite: real S3 (moto_server), VCF batches, ground truth, digests.

Nothing here mocks Icechunk, S3 or the filesystem. Ground truth is ``bcftools`` on the original VCFs
against ``vcztools`` (an independent reader) on the store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
VENV_BIN = pathlib.Path(sys.executable).parent


def venv_tool(name: str) -> str:
    """A console script of the running interpreter's environment (falls back to PATH)."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (looked in {VENV_BIN} and PATH)")
    return found


# ---------------------------------------------------------------------------------------------
# S3: a real moto_server on 127.0.0.1
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A loopback port nobody listens on (bound then released; nothing else takes it that fast)."""
    return free_port()


@dataclasses.dataclass
class MotoS3:
    """A running ``moto_server``: one bucket, credentials moto accepts, helpers for fresh prefixes."""

    endpoint_url: str
    bucket: str
    process: subprocess.Popen
    access_key_id: str = "testing"
    secret_access_key: str = "testing"
    region: str = "us-east-1"

    @property
    def storage_options(self) -> dict:
        """Options in the engine's shape (``open_store(..., storage_options=...)``)."""
        return {
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "allow_http": True,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "force_path_style": True,
        }

    def storage_option_args(self) -> list[str]:
        """The same options as repeated ``--storage-option KEY=VALUE`` CLI arguments."""
        args = []
        for key, value in self.storage_options.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            args += ["--storage-option", f"{key}={value}"]
        return args

    def new_url(self, name: str = "store") -> str:
        """A fresh, empty ``s3://bucket/<unique prefix>``."""
        return f"s3://{self.bucket}/{name}-{uuid.uuid4().hex[:12]}"

    def prefix_of(self, url: str) -> str:
        assert url.startswith(f"s3://{self.bucket}/"), url
        return url[len(f"s3://{self.bucket}/"):].strip("/")

    def client(self, *, access_key_id: str | None = None, secret_access_key: str | None = None,
               service: str = "s3"):
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=access_key_id or self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def aws_env(self) -> dict:
        """Environment for a subprocess (e.g. the vcztools CLI) that reads AWS credentials from env."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }

    def set_auth(self, initial_no_auth_action_count: float) -> None:
        """Moto's IAM auth switch: 0 → every request must carry valid IAM credentials; inf → off."""
        value = "inf" if initial_no_auth_action_count == float("inf") else str(
            int(initial_no_auth_action_count))
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset-auth",
                                     data=value.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen, timeout: float = 10) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


def start_moto_server(log_path: pathlib.Path | None = None, *, bucket: str | None = "vczstore-test",
                      timeout: float = 60) -> MotoS3:
    """Start ``moto_server -H 127.0.0.1 -p PORT`` and wait until it answers; create ``bucket``."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [venv_tool("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    if log_path:
        log.close()
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}; log: {log_path}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                break
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                stop_process(process)
                raise RuntimeError(f"moto_server did not answer on {endpoint} in {timeout}s") from None
            time.sleep(0.1)
    moto = MotoS3(endpoint_url=endpoint, bucket=bucket or "", process=process)
    if bucket:
        moto.client().create_bucket(Bucket=bucket)
    return moto


# ---------------------------------------------------------------------------------------------
# Digests: "the store is byte-for-byte unchanged"
# ---------------------------------------------------------------------------------------------


def _sha256_file(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_digest(path) -> dict[str, str]:
    """relpath → sha256 for every file under ``path`` (symlinks followed; directories implied)."""
    root = pathlib.Path(path)
    if not root.exists():
        return {}
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[p.relative_to(root).as_posix()] = _sha256_file(p)
    return out


def s3_digest(moto_s3: MotoS3, prefix: str) -> dict[str, str]:
    """key (relative to ``prefix``) → sha256 of the object's bytes, for every object under it.

    ``prefix`` may be a bare prefix or the store's ``s3://bucket/prefix`` URL.
    """
    if prefix.startswith("s3://"):
        prefix = moto_s3.prefix_of(prefix)
    prefix = prefix.strip("/") + "/"
    client = moto_s3.client()
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=moto_s3.bucket,
                                                                 Prefix=prefix):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=moto_s3.bucket, Key=obj["Key"])["Body"].read()
            out[obj["Key"][len(prefix):]] = hashlib.sha256(body).hexdigest()
    return out


def digest_diff(before: dict, after: dict) -> str:
    """A short human description of how two digests differ ('' when equal)."""
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    parts = []
    for label, keys in (("added", added), ("removed", removed), ("changed", changed)):
        if keys:
            shown = ", ".join(keys[:8]) + (" ..." if len(keys) > 8 else "")
            parts.append(f"{len(keys)} {label}: {shown}")
    return "; ".join(parts)


def assert_unchanged(before: dict, after: dict, what: str = "store") -> None:
    diff = digest_diff(before, after)
    assert not diff, f"{what} changed: {diff}"


# ---------------------------------------------------------------------------------------------
# VCF files
# ---------------------------------------------------------------------------------------------


def run(cmd, *, check=True, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    proc = subprocess.run([str(c) for c in cmd], **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
            f"stdout: {(proc.stdout or '')[-2000:]}\nstderr: {(proc.stderr or '')[-4000:]}"
        )
    return proc


def bgzip_index(vcf_text_path, out_path=None) -> pathlib.Path:
    """Plain-text VCF → bgzipped ``.vcf.gz`` with a CSI index (what bio2zarr wants)."""
    vcf_text_path = pathlib.Path(vcf_text_path)
    if out_path is None:
        name = vcf_text_path.name.removesuffix(".vcf") + ".vcf.gz"
        out_path = vcf_text_path.with_name(name)
    out_path = pathlib.Path(out_path)
    run(["bcftools", "view", "--no-version", "-Oz", "-o", out_path, vcf_text_path])
    run(["bcftools", "index", "-f", out_path])
    return out_path


def make_vcf(directory, name: str, samples: list[str], *, num_variants: int = 100,
             sites_seed: int = 42, seed: int = 1, edit=None, **kwargs) -> pathlib.Path:
    """Generate a VCF with ``vczstore_dagster.testdata``; bgzip + index it. ``edit(text) -> text``
    may rewrite the plain text first (to make a bad batch)."""
    from vczstore_dagster import testdata

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    plain = directory / f"{name}.vcf"
    testdata.write_vcf(plain, samples, num_variants=num_variants, sites_seed=sites_seed, seed=seed,
                       **kwargs)
    if edit is not None:
        plain.write_text(edit(plain.read_text()))
    out = bgzip_index(plain, directory / f"{name}.vcf.gz")
    plain.unlink()
    return out


def vcf_samples(vcf_path) -> list[str]:
    out = run(["bcftools", "query", "-l", vcf_path]).stdout
    return [line for line in out.splitlines() if line]


def bio2zarr_convert(vcfs, out, *, samples_chunk_size=None, variants_chunk_size=None,
                     zarr_format=3) -> pathlib.Path:
    """Plain bio2zarr (not the engine): VCF(s) → VCZ. Used to make batches independently."""
    from bio2zarr import vcf as b2z_vcf

    out = pathlib.Path(out)
    b2z_vcf.convert([str(v) for v in vcfs], str(out), worker_processes=0,
                    samples_chunk_size=samples_chunk_size,
                    variants_chunk_size=variants_chunk_size, zarr_format=zarr_format)
    return out


# ---------------------------------------------------------------------------------------------
# Ground truth: bcftools on the VCFs vs vcztools on the store
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class VcfTable:
    samples: list[str]
    rows: list[tuple]  # (CHROM, POS, ID, REF, ALT, QUAL, FILTER, {sample: {key: value}})


def _norm_value(value: str) -> str:
    """One FORMAT value (maybe a vector) in a canonical spelling."""
    parts = value.split(",")
    if all(p in (".", "") for p in parts):
        return "."
    out = []
    for p in parts:
        out.append(_norm_scalar(p))
    return ",".join(out)


def _norm_scalar(p: str) -> str:
    if p == ".":
        return p
    try:
        int(p)
        return p
    except ValueError:
        pass
    try:
        x = float(p)
    except ValueError:
        return p
    # Both sides are float32 values printed differently (bcftools: shortest, 33153.4; vcztools:
    # 3 decimals of the float32, 33153.398): compare the float32s at vcztools' precision.
    # A whole number may be printed "2311380" by one and "2311380.000" (or 2.31138e+06) by the other.
    x = round(float(np.float32(x)), 3)
    return str(int(x)) if x.is_integer() else f"{x:.3f}"


def _norm_gt(gt: str) -> str:
    """A GT value in a canonical spelling. Ploidy is kept: "." (a missing haploid call) and
    "./." (a missing diploid call) differ. Phase is not compared where an allele is missing:
    htslib keeps the phase bit inside each allele's value and a missing allele has none, so
    bcftools prints the generator's "0|." as "0/." and ".|." as "./.", vcztools keeps them."""
    alleles = gt.replace("|", "/").split("/")
    if "." in alleles:
        return "/".join(alleles)
    return gt


def parse_vcf_text(text: str) -> VcfTable:
    samples: list[str] = []
    rows = []
    for line in text.splitlines():
        if not line or line.startswith("##"):
            continue
        cols = line.split("\t")
        if line.startswith("#CHROM"):
            samples = cols[9:]
            continue
        chrom, pos, vid, ref, alt, qual, flt = cols[:7]
        qual = "." if qual == "." else _norm_scalar(qual)
        per_sample = {}
        if len(cols) > 9:
            keys = cols[8].split(":")
            for name, cell in zip(samples, cols[9:], strict=True):
                values = cell.split(":")
                d = {}
                for i, key in enumerate(keys):
                    v = values[i] if i < len(values) else "."
                    d[key] = _norm_gt(v) if key == "GT" else _norm_value(v)
                per_sample[name] = d
        rows.append((chrom, int(pos), vid, ref, alt, qual, flt, per_sample))
    return VcfTable(samples, rows)


def haploid_missing(table: VcfTable, samples, contigs) -> VcfTable:
    """``bcftools merge`` fills a record that one file lacks with "./." for that file's samples,
    whatever their ploidy; a store knows a haploid sample's missing call is "." (fill in the
    second slot). Spell the merge's fill as "." for ``samples`` on ``contigs``."""
    for row in table.rows:
        if row[0] in contigs:
            for name in samples:
                if row[7].get(name, {}).get("GT") == "./.":
                    row[7][name]["GT"] = "."
    return table


def bcftools_truth(vcf_paths, removed=()) -> str:
    """``bcftools merge`` of the VCFs (or ``view`` of one), less ``removed`` samples."""
    vcf_paths = [str(p) for p in vcf_paths]
    if len(vcf_paths) == 1:
        text = run(["bcftools", "view", "--no-version", vcf_paths[0]]).stdout
    else:
        text = run(["bcftools", "merge", "--no-version", *vcf_paths]).stdout
    if removed:
        proc = run(["bcftools", "view", "--no-version", "--no-update", "-s",
                    "^" + ",".join(removed), "-"], input=text)
        text = proc.stdout
    return text


def vcztools_text_from_group(group) -> str:
    """vcztools' own Python reader + VCF writer over an opened zarr group."""
    from vcztools import retrieval, vcf_writer

    out = io.StringIO()
    with retrieval.VczReader(group) as reader:
        reader.set_bcftools_semantics(full_sample_filter=True)
        vcf_writer.write_vcf(reader, out)
    return out.getvalue()


def vcztools_cli_text(url: str, *, storage_options: dict | None = None,
                      backend_storage: str | None = "icechunk") -> str:
    """The ``vcztools view`` CLI (reads branch ``main`` of an Icechunk repo)."""
    cmd = [venv_tool("vcztools"), "view"]
    if backend_storage:
        cmd += ["--backend-storage", backend_storage]
    env = dict(os.environ)
    if storage_options:
        opts = dict(storage_options)
        # vcztools passes from_env=True to icechunk.s3_storage: credentials go through env.
        key = opts.pop("access_key_id", None)
        secret = opts.pop("secret_access_key", None)
        if key:
            env["AWS_ACCESS_KEY_ID"] = key
            env["AWS_SECRET_ACCESS_KEY"] = secret or ""
        region = opts.get("region")
        if region:
            env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = region
        for k, v in opts.items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            cmd += ["--storage-option", f"{k}={v}"]
    cmd.append(url)
    return run(cmd, env=env, timeout=300).stdout


def store_vcf_text(store_or_group, *, at=None, storage_options=None, cli: bool = True) -> str:
    """vcztools' VCF of a store: the CLI for ``main`` of an Icechunk store (unless ``cli`` is
    False), vcztools' Python reader otherwise."""
    import zarr

    if isinstance(store_or_group, zarr.Group):
        assert at is None, "at= makes no sense with an already opened group"
        return vcztools_text_from_group(store_or_group)
    store = store_or_group
    if isinstance(store, str | os.PathLike):
        from vczstore_dagster.store import open_store

        store = open_store(str(store), storage_options=storage_options)
    if cli and store.backend == "icechunk" and at in (None, "main"):
        loc = store.location
        options = loc.options if not loc.is_local else None
        return vcztools_cli_text(loc.url if not loc.is_local else loc.path,
                                 storage_options=options)
    return vcztools_text_from_group(store.readonly_group(at))


def compare_tables(expected: VcfTable, got: VcfTable, *, max_report: int = 10) -> list[str]:
    problems = []
    if expected.samples != got.samples:
        missing = [s for s in expected.samples if s not in got.samples]
        extra = [s for s in got.samples if s not in expected.samples]
        problems.append(
            f"samples differ: expected {len(expected.samples)}, got {len(got.samples)}; "
            f"missing {missing[:5]}, extra {extra[:5]}"
            + ("; same set, different order" if not missing and not extra else "")
        )
        return problems
    if len(expected.rows) != len(got.rows):
        problems.append(f"record count: expected {len(expected.rows)}, got {len(got.rows)}")
        return problems
    for e, g in zip(expected.rows, got.rows, strict=True):
        if e[:7] != g[:7]:
            problems.append(f"site differs: expected {e[:7]}, got {g[:7]}")
        else:
            es, gs = e[7], g[7]
            for name in expected.samples:
                ed, gd = es.get(name, {}), gs.get(name, {})
                for key in sorted(set(ed) | set(gd)):
                    ev, gv = ed.get(key, "."), gd.get(key, ".")
                    if ev != gv:
                        problems.append(
                            f"{e[0]}:{e[1]} sample {name} {key}: expected {ev!r}, got {gv!r}")
                        if len(problems) >= max_report:
                            return problems
        if len(problems) >= max_report:
            return problems
    return problems


def assert_matches_bcftools(store_or_group, vcf_paths, removed=(), at=None, *,
                            storage_options=None, cli: bool = True) -> VcfTable:
    """The store (read by vcztools) equals ``bcftools merge`` of ``vcf_paths`` less ``removed``.

    ``store_or_group``: an engine Store, a store URL, or an opened zarr Group. Main of an Icechunk
    store is read by the ``vcztools view`` CLI (``cli=False``: vcztools' Python reader in this
    process, faster); tags, snapshots and plain Zarr by vcztools' Python reader.
    Compares CHROM POS ID REF ALT QUAL FILTER, the sample columns (names and order) and every
    FORMAT value of every sample; not headers or INFO. Returns the parsed store table.
    """
    expected = parse_vcf_text(bcftools_truth(vcf_paths, removed))
    got = parse_vcf_text(store_vcf_text(store_or_group, at=at, storage_options=storage_options,
                                        cli=cli))
    assert expected.rows, "bcftools produced no records: the test data is wrong"
    problems = compare_tables(expected, got)
    assert not problems, "vcztools view of the store differs from bcftools:\n  " + "\n  ".join(
        problems)
    return got


# ---------------------------------------------------------------------------------------------
# Subprocesses running the engine
# ---------------------------------------------------------------------------------------------


def engine_subprocess(code: str, *args, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """Start ``python -c code args...`` in the project's environment, in its own process group."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [full_env.get("PYTHONPATH")])])
    full_env.update(env or {})
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)


# argv: url, storage options (JSON), batch path, batch id, [ready file, go file]
APPEND_WORKER = """
import json, os, pathlib, sys, time
from vczstore_dagster.store import append_batch, open_store
url, options, batch, batch_id = sys.argv[1:5]
if len(sys.argv) > 6:
    pathlib.Path(sys.argv[5]).write_text("ready")
    while not os.path.exists(sys.argv[6]):
        time.sleep(0.002)
store = open_store(url, storage_options=json.loads(options) or None)
result = append_batch(store, batch, batch_id=batch_id)
print(json.dumps({"batch_id": result.batch_id, "samples_before": result.samples_before,
                  "samples_after": result.samples_after, "attempts": result.attempts}))
"""


def start_append(store, batch, batch_id: str, *extra, env: dict | None = None):
    """A subprocess appending ``batch`` to ``store`` (see :data:`APPEND_WORKER`)."""
    import json

    loc = store.location
    options = {} if loc.is_local else loc.options
    return engine_subprocess(APPEND_WORKER, store.url, json.dumps(options), batch, batch_id,
                             *extra, env=env)


def vczstore_process(*args, env: dict | None = None) -> subprocess.Popen:
    """The installed ``vczstore`` console script in its own process group (pipes for its output)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.Popen([venv_tool("vczstore"), "--no-progress", *map(str, args)],
                            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, cwd=REPO_ROOT)


def pause_env(point: str, marker, until=None, seconds: float = 300) -> dict:
    """Environment that holds a writer at the engine's pause point ``point`` (see
    ``transaction.pause_for_tests``): it writes its pass number to ``marker`` and waits until
    ``until`` holds a number at least that pass (or for ``seconds`` when ``until`` is None)."""
    env = {"VCZSTORE_TEST_PAUSE_AT": point, "VCZSTORE_TEST_PAUSE_MARKER": str(marker),
           "VCZSTORE_TEST_PAUSE_SECONDS": str(seconds)}
    if until is not None:
        env["VCZSTORE_TEST_PAUSE_UNTIL"] = str(until)
    return env


def wait_for_pass(marker, n: int, process: subprocess.Popen | None, timeout: float = 120) -> None:
    """Wait until a paused writer has reached its pause point for the ``n``-th time."""
    marker = pathlib.Path(marker)
    wait_until(lambda: marker.exists() and int(marker.read_text() or 0) >= n, process,
               f"pass {n} of {marker}", timeout)


def release_pass(until, n: int) -> None:
    """Let a writer paused at its ``n``-th pass go on (and every earlier pass)."""
    tmp = pathlib.Path(str(until) + ".tmp")
    tmp.write_text(str(n))
    tmp.replace(until)


class StderrFollower:
    """Reads a process's stderr in a thread, so a test can wait for a line while it runs."""

    def __init__(self, process: subprocess.Popen):
        import threading

        self.process, self.lines = process, []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 120) -> str:
        """Wait until a line matches ``pattern`` (a regex); returns that line."""
        import re

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            if not self.thread.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"no stderr line matching {pattern!r} (exit {self.process.poll()}):"
                             f"\n{self.text[-4000:]}")

    def finish(self, timeout: float = 300) -> tuple[int, str, str]:
        """Wait for the process; returns (exit code, stdout, stderr)."""
        out = self.process.stdout.read()
        code = self.process.wait(timeout=timeout)
        self.thread.join(timeout=30)
        return code, out, self.text


def wip_branches(store) -> set[str]:
    from vczstore_dagster.store.transaction import WIP_BRANCH_PREFIX

    return {b for b in store.repo.list_branches() if b.startswith(WIP_BRANCH_PREFIX)}


def wait_for_file(path, process: subprocess.Popen, timeout: float) -> None:
    path = pathlib.Path(path)
    wait_until(path.exists, process, str(path), timeout)


def wait_until(ready, process: subprocess.Popen | None, what: str, timeout: float) -> None:
    """Poll ``ready()`` until it is true; fail if ``process`` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"process exited ({process.returncode}) before {what}:\n"
                                 f"{out[-2000:]}\n{err[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} in {timeout}s")
        time.sleep(0.01)


@contextlib.contextmanager
def killing(process: subprocess.Popen):
    """Make sure a subprocess started by a test is gone when the test ends."""
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


# ---------------------------------------------------------------------------------------------
# Stores built with the engine
# ---------------------------------------------------------------------------------------------

STORE_KINDS = ("icechunk", "s3", "zarr2", "zarr3")


_CONVERTED: dict = {}


def cached_bio2zarr_convert(vcfs, cache_dir, *, samples_chunk_size, variants_chunk_size=None,
                            zarr_format=3) -> pathlib.Path:
    """:func:`bio2zarr_convert`, done once per session for the same inputs (read-only result)."""
    key = (tuple(str(v) for v in vcfs), samples_chunk_size, variants_chunk_size, zarr_format)
    path = _CONVERTED.get(key)
    if path is None or not path.exists():
        path = pathlib.Path(cache_dir) / f"first-{uuid.uuid4().hex[:8]}.vcz"
        path.parent.mkdir(parents=True, exist_ok=True)
        bio2zarr_convert(vcfs, path, samples_chunk_size=samples_chunk_size,
                         variants_chunk_size=variants_chunk_size, zarr_format=zarr_format)
        _CONVERTED[key] = path
    return path


def build_store(kind: str, first_vcfs, workdir, *, moto: MotoS3 | None = None,
                samples_chunk_size: int = 8, variants_chunk_size: int | None = None,
                variants=None, batch_id: str | None = None, name: str = "store",
                cache_dir=None):
    """A new store of ``kind`` (icechunk | s3 | zarr2 | zarr3) made by the engine's ``init``.

    ``first_vcfs``: converted with plain bio2zarr (the store's chunk sizes), then ``init --from``
    (the conversion is cached in ``cache_dir`` when given). ``variants``: ``init --variants``
    (a zero-sample store). Returns ``(store, url)``.
    """
    from vczstore_dagster.store import init_store, open_store

    assert kind in STORE_KINDS, kind
    workdir = pathlib.Path(workdir)
    storage_options = None
    if kind == "s3":
        assert moto is not None, "an S3 store needs the moto_s3 fixture"
        url = moto.new_url(name)
        storage_options = moto.storage_options
    else:
        url = str(workdir / f"{name}-{uuid.uuid4().hex[:6]}")
    backend = "icechunk" if kind in ("icechunk", "s3") else "zarr"
    zarr_format = 2 if kind == "zarr2" else 3
    kwargs = dict(storage_options=storage_options, backend=backend, zarr_format=zarr_format,
                  samples_chunk_size=samples_chunk_size)
    if first_vcfs is not None:
        if cache_dir is not None:
            vcz = cached_bio2zarr_convert(first_vcfs, cache_dir,
                                          samples_chunk_size=samples_chunk_size,
                                          variants_chunk_size=variants_chunk_size,
                                          zarr_format=zarr_format)
        else:
            vcz = workdir / f"init-{uuid.uuid4().hex[:6]}.vcz"
            bio2zarr_convert(first_vcfs, vcz, samples_chunk_size=samples_chunk_size,
                             variants_chunk_size=variants_chunk_size, zarr_format=zarr_format)
        init_store(url, from_vcz=str(vcz), batch_id=batch_id, **kwargs)
    else:
        init_store(url, variants=[str(v) for v in variants], **kwargs)
    return open_store(url, storage_options=storage_options), url


def convert_like(store, vcfs, out):
    """The engine's ``convert --like STORE``: VCF(s) → a batch VCZ in the store's schema."""
    from vczstore_dagster.store import convert_vcfs

    return convert_vcfs([str(v) for v in vcfs], str(out), like=store)


def assert_same_vcz(expected_path, got_path) -> None:
    """Two VCZs have the same arrays (dtypes, shapes, chunks, codecs, fill values, dimension names,
    attributes), the same values in every array (floats bit for bit: NaN patterns too) and the
    same root attributes."""
    import numpy as np
    import zarr

    expected = zarr.open_group(str(expected_path), mode="r")
    got = zarr.open_group(str(got_path), mode="r")
    assert dict(got.attrs) == dict(expected.attrs), "root attributes differ"
    names = sorted(name for name, _ in expected.arrays())
    assert sorted(name for name, _ in got.arrays()) == names, "the arrays differ"
    for name in names:
        e, g = expected[name], got[name]
        assert g.metadata.to_dict() == e.metadata.to_dict(), f"{name}: metadata differs"
        ev, gv = e[...], g[...]
        if ev.dtype.kind == "f":
            ev, gv = ev.view(f"u{ev.dtype.itemsize}"), gv.view(f"u{gv.dtype.itemsize}")
        assert np.array_equal(ev, gv), f"{name}: values differ"


def store_digest(store, moto: MotoS3 | None = None) -> dict[str, str]:
    """Every byte of a store's storage, local or S3 (see :func:`tree_digest`, :func:`s3_digest`)."""
    loc = store.location
    if loc.is_local:
        return tree_digest(loc.path)
    assert moto is not None, "digesting an S3 store needs the moto_s3 fixture"
    return s3_digest(moto, loc.prefix)


def sample_ids(store, at=None) -> list[str]:
    import numpy as np

    group = store.readonly_group(at)
    return [str(s) for s in np.asarray(group["sample_id"][...]).tolist()]


def chunks_per_sample_column(store) -> int:
    """How many chunks one sample-chunk column holds over all sample arrays of the store."""
    from vczstore_dagster.store import schema

    total = 0
    for _, array in schema.sample_arrays(store.readonly_group()).items():
        axis = schema.sample_axis(array)
        n = 1
        for i, (size, chunk) in enumerate(zip(array.shape, array.chunks, strict=True)):
            if i != axis:
                n *= max(1, -(-size // chunk))
        total += n
    return total


def storage_keys(store, moto: MotoS3 | None = None) -> set[str]:
    """The names of every file / object of a store's storage (no content)."""
    loc = store.location
    if loc.is_local:
        root = pathlib.Path(loc.path)
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert moto is not None
    client = moto.client()
    prefix = loc.prefix.strip("/") + "/"
    keys = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=moto.bucket,
                                                                 Prefix=prefix):
        keys.update(obj["Key"][len(prefix):] for obj in page.get("Contents", []))
    return keys
