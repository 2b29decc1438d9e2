"""``make dev``: example batches in ``data/inbox``, a local Dagster instance, and ``dagster dev``.

Three good batches share one variant set; ``batch-4-extra-alleles`` calls ALT alleles at some sites
that the store's (fixed) variant set does not have, so its ``variants_match_store`` check fails and
the store is left as it was. The sensors are on: within
a few minutes the good batches are in the store. Open http://127.0.0.1:3000.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys

from vczstore_dagster import testdata

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
NUM_VARIANTS = 200
SITES_SEED = 42
# (folder name, sample-ID prefix, number of samples, whether it brings extra ALT alleles)
EXAMPLE_BATCHES = [
    ("batch-1", "P", 30, False),
    ("batch-2", "Q", 25, False),
    ("batch-3", "R", 20, False),
    ("batch-4-extra-alleles", "X", 10, True),
]


def sites_with_extra_alleles(num_variants: int = NUM_VARIANTS, every: int = 25) -> list:
    """The shared sites, with an extra (indel) ALT allele at every ``every``-th one."""
    sites = testdata.make_sites(num_variants, SITES_SEED)
    return [
        dataclasses.replace(site, alts=(*site.alts, site.ref + "TT")) if i % every == 0 else site
        for i, site in enumerate(sites)
    ]
POOL = "vcz_store"
INSTANCE_CONFIG = "dagster.yaml"


def write_example_batches(inbox: pathlib.Path) -> list[str]:
    """Write each example batch that is not in the inbox yet; ``_READY`` last."""
    written = []
    for seed, (name, prefix, num_samples, extra_alleles) in enumerate(EXAMPLE_BATCHES, start=1):
        folder = inbox / name
        if (folder / "_READY").exists():
            continue
        samples = testdata.sample_names(f"{prefix}-", num_samples)
        sites = sites_with_extra_alleles() if extra_alleles else None
        testdata.write_vcf(folder / f"{name}.vcf", samples, num_variants=NUM_VARIANTS,
                           sites_seed=SITES_SEED, sites=sites, seed=seed)
        (folder / "_READY").touch()
        written.append(name)
    return written


def prepare_dagster_home(home: pathlib.Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / INSTANCE_CONFIG, home / "dagster.yaml")
    nux = home / ".nux" / "nux.yaml"
    nux.parent.mkdir(exist_ok=True)
    nux.write_text("seen: 1\n")  # no "join the community" pop-up over the UI


def dagster_command(*args: str) -> list[str]:
    return [str(pathlib.Path(sys.executable).parent / "dagster"), *args]


def dg_dev_command(port: str) -> list[str]:
    """``dg dev`` on the project's ``workspace.yaml``, to be run from DAGSTER_HOME: run from the
    project folder (dg's default), Dagster warns that the project's ``dagster.yaml`` "will not be
    used" because DAGSTER_HOME holds the copy that is."""
    return [str(pathlib.Path(sys.executable).parent / "dg"), "dev", "-w",
            str(REPO_ROOT / "workspace.yaml"), "--host", "127.0.0.1", "--port", port]


def main() -> None:
    os.chdir(REPO_ROOT)
    data = REPO_ROOT / "data"
    inbox = os.environ.get("VCZSTORE_INBOX") or str(data / "inbox")
    withdrawals = os.environ.get("VCZSTORE_WITHDRAWALS") or str(data / "withdrawals")
    if not inbox.startswith("s3://"):
        written = write_example_batches(pathlib.Path(inbox))
        print(f"example batches in {inbox}: {', '.join(written) or 'already there'}")
    if not withdrawals.startswith("s3://"):
        pathlib.Path(withdrawals).mkdir(parents=True, exist_ok=True)
    # Dagster's processes start in DAGSTER_HOME, not here: the defaults under data/ are made
    # absolute for them.
    for name, default in (("VCZSTORE_URL", data / "store"), ("VCZSTORE_INBOX", inbox),
                          ("VCZSTORE_STAGING", data / "staging"),
                          ("VCZSTORE_WITHDRAWALS", withdrawals)):
        os.environ.setdefault(name, str(default))
    home = pathlib.Path(os.environ.get("DAGSTER_HOME") or REPO_ROOT / ".dagster_home").absolute()
    os.environ["DAGSTER_HOME"] = str(home)
    # Dagster's 60 s for a call to the code server failed every run's launch on a loaded 2-core
    # machine (DagsterUserCodeUnreachableError), each batch then shown as a failed run.
    os.environ.setdefault("DAGSTER_GRPC_TIMEOUT_SECONDS", "300")
    prepare_dagster_home(home)
    subprocess.run(dagster_command("instance", "concurrency", "set", POOL, "1"), check=True)
    port = os.environ.get("DAGSTER_PORT", "3000")
    print(f"Dagster UI: http://127.0.0.1:{port}  (DAGSTER_HOME={home})", flush=True)
    # dg warns when the project's .venv is not the active one: make it the active one.
    os.environ["VIRTUAL_ENV"] = sys.prefix
    command = dg_dev_command(port)
    os.chdir(home)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
