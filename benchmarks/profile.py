"""Profile one benchmark operation with py-spy (all threads) and summarise where its time goes.

    python -m benchmarks.profile [--py-spy PATH] [--within FUNC] OP JSON_ARGS

runs ``benchmarks.worker OP JSON_ARGS`` under ``py-spy record --format raw`` and prints the
functions with the largest inclusive and self shares of the busy samples: every thread counts (zarr
decodes and encodes in a thread pool, and drives the store from its event-loop thread), samples of
a thread blocked in a wait (idle pool workers, the main thread waiting for the event loop) are left
out, and so are the imports the worker does before its clock starts. ``--within FUNC`` keeps only
samples under FUNC. py-spy is not a project dependency: point ``--py-spy`` at a binary
(``uv pip install --target DIR py-spy`` gives one).
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import shutil
import subprocess
import sys
import tempfile


def parse(raw: str):
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


# Leaf frames of a thread that is waiting, not working.
WAITING = {"_worker (thread.py)", "EpollSelector.select (selectors.py)", "Condition.wait (threading.py)",
           "Event.wait (threading.py)", "Thread.join (threading.py)", "Queue.get (queue.py)"}


def short(frame: str) -> str:
    """``func (path/to/module.py:12)`` → ``func (module.py)``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({pathlib.Path(where).name})" if where else name


def summarise(raw: str, within: str | None = None, top: int = 25,
              exclude: str = "_engine (worker.py)", idle: bool = False) -> str:
    inclusive: collections.Counter = collections.Counter()
    self_time: collections.Counter = collections.Counter()
    total = 0
    for frames, count in parse(raw):
        names = [short(f) for f in frames]
        if within and not any(n.startswith(within + " ") for n in names):
            continue
        if exclude and exclude in names:  # the imports before the worker's clock starts
            continue
        if names[-1] in WAITING and not idle:
            continue
        total += count
        for n in set(names):
            inclusive[n] += count
        self_time[names[-1]] += count
    if not total:
        return f"no samples inside {within!r}"
    where = within or "the process, less the imports before the clock"
    kind = "waits included: wall-clock shares" if idle else "all threads, waits excluded"
    lines = [f"{total} samples inside {where} ({kind})", "",
             "inclusive share:"]
    lines += [f"  {100 * c / total:5.1f}%  {n}" for n, c in inclusive.most_common(top)]
    lines += ["", "self share:"]
    lines += [f"  {100 * c / total:5.1f}%  {n}" for n, c in self_time.most_common(top)]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "/tmp/pyspy/bin/py-spy")
    parser.add_argument("--within", default=None, help="only samples under this function")
    parser.add_argument("--native", action="store_true", help="include native (C/Rust) frames")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--wall", action="store_true",
                        help="wall-clock view: the main thread's samples under op_OP, waits included")
    parser.add_argument("op")
    parser.add_argument("args")
    a = parser.parse_args(argv)
    if not pathlib.Path(a.py_spy).exists():
        parser.error(f"py-spy not found at {a.py_spy}")
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "raw.txt"
        cmd = [a.py_spy, "record", "-r", "200", "-f", "raw", "-o", str(out)]
        if a.native:
            cmd.append("--native")
        if a.wall:
            cmd.append("--idle")
        cmd += ["--", sys.executable, "-m", "benchmarks.worker", a.op, a.args]
        subprocess.run(cmd, check=True)
        within = a.within or (f"op_{a.op}" if a.wall else None)
        print(summarise(out.read_text(), within, a.top, idle=a.wall))
    return 0


if __name__ == "__main__":
    sys.exit(main())
