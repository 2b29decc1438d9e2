"""A real PostgreSQL server for tests: Debian's ``postgresql`` binaries, a new database cluster in a
temporary folder, listening on 127.0.0.1 at a free port with password authentication.

``initdb`` refuses to run as root (as CI does): then the server runs as the ``postgres`` system
user that Debian's package creates, from a folder that user owns.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import pathlib
import shutil
import subprocess
import tempfile

from vczstore_dagster_tests.helpers import free_port

USER = "vczstore"
DATABASE = "dagster"


@dataclasses.dataclass
class Postgres:
    host: str
    port: int
    user: str
    password: str
    db_name: str
    root: pathlib.Path
    bin_dir: pathlib.Path
    run_as: dict

    def env(self) -> dict[str, str]:
        """The variables ``dagster.postgres.yaml`` reads."""
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port),
                "DAGSTER_PG_USER": self.user, "DAGSTER_PG_PASSWORD": self.password,
                "DAGSTER_PG_DB": self.db_name}

    def connect(self, db_name: str | None = None):
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                password=self.password, dbname=db_name or self.db_name)

    def stop(self) -> None:
        _run([self.bin_dir / "pg_ctl", "-D", self.root / "data", "-m", "fast", "-w", "stop"],
             self.run_as, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def bin_dir() -> pathlib.Path:
    """Debian's PostgreSQL binaries (the newest major version installed)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(pathlib.Path(p).parts[-3]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: /usr/lib/postgresql/*/bin/initdb is "
                           "missing (Debian's package `postgresql`; `make system-deps` installs it)")
    return pathlib.Path(found[-1]).parent


def _run(cmd, run_as: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120,
                          **run_as)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def start_postgres() -> Postgres:
    binaries = bin_dir()
    root = pathlib.Path(tempfile.mkdtemp(prefix="vczstore-pg-"))
    run_as: dict = {}
    if os.geteuid() == 0:
        import pwd

        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
        run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": [],
                  "env": {"PATH": "/usr/bin:/bin", "HOME": str(root)}, "cwd": str(root)}
    password = os.urandom(12).hex()
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if run_as:
        os.chown(pwfile, run_as["user"], run_as["group"])
    port = free_port()
    try:
        _run([binaries / "initdb", "-D", root / "data", "-U", USER, f"--pwfile={pwfile}",
              "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"], run_as)
        pwfile.unlink()
        options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off"
        _run([binaries / "pg_ctl", "-D", root / "data", "-l", root / "server.log", "-o", options,
              "-w", "-t", "60", "start"], run_as)
    except BaseException:
        log = root / "server.log"
        text = log.read_text()[-2000:] if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        if text:
            raise RuntimeError(f"PostgreSQL did not start; its log:\n{text}") from None
        raise
    server = Postgres("127.0.0.1", port, USER, password, DATABASE, root, binaries, run_as)
    conn = server.connect("postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        conn.close()
    return server
