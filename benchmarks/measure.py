"""Timing and peak memory of one subprocess, and the statistics over several runs."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
RESULT_PREFIX = "BENCH-RESULT "


class MeasureError(RuntimeError):
    pass


@dataclasses.dataclass
class Measurement:
    seconds: float  # the operation alone (timed inside the worker), or the process for commands
    process_seconds: float  # the whole process: interpreter start, imports, operation
    max_rss_mb: float  # peak resident memory of the process (and children it waited for)
    info: dict


def run_process(cmd: list[str], *, env: dict | None = None, timeout: float = 3600,
                cwd: pathlib.Path = REPO) -> Measurement:
    """Run ``cmd``; wall time and peak RSS from wait4. A worker's own timing (a ``BENCH-RESULT``
    line on stdout) replaces the wall time as ``seconds``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=cwd,
                                env={**os.environ, **(env or {})})
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join((stderr or stdout).strip().splitlines()[-15:])
        raise MeasureError(f"{' '.join(map(str, cmd[:4]))}... exited {proc.returncode}:\n{tail}")
    seconds, info = wall, {}
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            payload = json.loads(line[len(RESULT_PREFIX):])
            seconds, info = payload["seconds"], payload.get("info") or {}
    return Measurement(seconds, wall, usage.ru_maxrss / 1024, info)


def worker(op: str, **kwargs) -> list[str]:
    """The command that runs one operation of ``benchmarks.worker`` in a fresh interpreter."""
    return [sys.executable, "-m", "benchmarks.worker", op, json.dumps(kwargs, default=str)]


def sync_disk(*, quiet_for: float = 1.0, at_most: float = 30.0) -> None:
    """Flush dirty pages (the copies made for a run), then wait until the disks have written
    nothing for ``quiet_for`` seconds (journal commits, deferred frees of the last run's deleted
    copies), at most ``at_most`` seconds: a timed run then starts on a quiet disk."""
    os.sync()
    deadline = time.monotonic() + at_most
    last, quiet_since = _sectors_written(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = _sectors_written()
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_for:
            return


def _sectors_written() -> int:
    """Sectors written so far by every whole disk (``/proc/diskstats``; 0 where it is missing)."""
    try:
        lines = pathlib.Path("/proc/diskstats").read_text().splitlines()
        disks = {d for d in os.listdir("/sys/block") if not d.startswith(("loop", "ram", "zram"))}
    except OSError:
        return 0
    return sum(int(f[9]) for f in map(str.split, lines) if len(f) > 9 and f[2] in disks)


def fresh_copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    if dst.exists():
        shutil.rmtree(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    return dst


def remove(path: pathlib.Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
    lock = path.with_name(path.name + ".lock")
    if lock.exists():
        lock.unlink()


@dataclasses.dataclass
class Series:
    """Several runs of one thing."""

    runs: list[Measurement] = dataclasses.field(default_factory=list)

    def add(self, m: Measurement) -> Measurement:
        self.runs.append(m)
        return m

    @property
    def median(self) -> float | None:
        return statistics.median(m.seconds for m in self.runs) if self.runs else None

    @property
    def process_median(self) -> float | None:
        return statistics.median(m.process_seconds for m in self.runs) if self.runs else None

    @property
    def max_rss_mb(self) -> float | None:
        return max(m.max_rss_mb for m in self.runs) if self.runs else None

    @property
    def all_seconds(self) -> list[float]:
        return [m.seconds for m in self.runs]
