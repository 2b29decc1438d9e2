"""Fixtures for the Dagster layer: a project laid out in a temporary folder, and batches in its
inbox. Everything is real: folders on disk, an Icechunk store, a SQLite Dagster instance."""

from __future__ import annotations

import dataclasses
import pathlib
import shutil

import dagster as dg
import pytest

from vczstore_dagster.definitions import build_definitions
from vczstore_dagster.defs.resources import (
    InboxResource,
    StagingResource,
    VczStoreResource,
    WithdrawalsResource,
)


@dataclasses.dataclass
class Project:
    root: pathlib.Path

    @property
    def inbox(self) -> pathlib.Path:
        return self.root / "inbox"

    @property
    def staging(self) -> pathlib.Path:
        return self.root / "staging"

    @property
    def withdrawals(self) -> pathlib.Path:
        return self.root / "withdrawals"

    @property
    def store_url(self) -> str:
        return str(self.root / "store")

    def resources(self) -> dict:
        return {
            "store": VczStoreResource(url=self.store_url),
            "inbox": InboxResource(url=str(self.inbox)),
            "staging": StagingResource(path=str(self.staging)),
            "withdrawals": WithdrawalsResource(url=str(self.withdrawals)),
        }

    def definitions(self) -> dg.Definitions:
        return build_definitions(self.resources())

    def env(self) -> dict[str, str]:
        """The same locations as environment variables, for ``dagster dev``."""
        return {
            "VCZSTORE_URL": self.store_url,
            "VCZSTORE_INBOX": str(self.inbox),
            "VCZSTORE_STAGING": str(self.staging),
            "VCZSTORE_WITHDRAWALS": str(self.withdrawals),
        }

    def drop_batch(self, name: str, vcfs, *, ready: bool = True) -> pathlib.Path:
        """Copy VCF files (with their indexes) into ``inbox/name``; ``_READY`` last."""
        folder = self.inbox / name
        folder.mkdir(parents=True, exist_ok=True)
        for vcf in vcfs:
            vcf = pathlib.Path(vcf)
            for path in [vcf, *vcf.parent.glob(vcf.name + ".*")]:
                shutil.copyfile(path, folder / path.name)
        if ready:
            (folder / "_READY").touch()
        return folder

    def drop_vcz_batch(self, name: str, vcfs, vcz_name: str, *, samples_chunk_size: int) -> pathlib.Path:
        """Convert VCFs with plain bio2zarr into ``inbox/name/vcz_name``; ``_READY`` last."""
        from vczstore_dagster_tests.helpers import bio2zarr_convert

        folder = self.inbox / name
        folder.mkdir(parents=True, exist_ok=True)
        bio2zarr_convert(vcfs, folder / vcz_name, samples_chunk_size=samples_chunk_size)
        (folder / "_READY").touch()
        return folder

    def request_withdrawal(self, name: str, sample_ids) -> pathlib.Path:
        self.withdrawals.mkdir(parents=True, exist_ok=True)
        path = self.withdrawals / f"{name}.txt"
        path.write_text("".join(f"{s}\n" for s in sample_ids))
        return path


@pytest.fixture
def project(tmp_path) -> Project:
    root = tmp_path / "project"
    for sub in ("inbox", "staging", "withdrawals"):
        (root / sub).mkdir(parents=True)
    return Project(root)


@dataclasses.dataclass
class Runs:
    """The runs a batch went through (``ingest_batch``, and any run after it)."""

    results: list
    instance: object = None

    @property
    def success(self) -> bool:
        """The batch is in the store: every run succeeded and one appended it."""
        return self.finished and self.appended

    @property
    def finished(self) -> bool:
        """Every run ended well (a refused batch's run does: it appends nothing)."""
        return all(r.success for r in self.results)

    @property
    def refused(self) -> str | None:
        """The checks that refused the batch (the run's ``vczstore/refused`` tag)."""
        from vczstore_dagster.defs.checks import REFUSED

        tags = [self.instance.get_run_by_id(r.run_id).tags.get(REFUSED) for r in self.results]
        return next((t for t in tags if t), None)

    @property
    def run_ids(self) -> set[str]:
        return {r.run_id for r in self.results}

    @property
    def appended(self) -> bool:
        return any(e.materialization.asset_key == dg.AssetKey("vcz_store")
                   for e in self.get_asset_materialization_events())

    def get_asset_materialization_events(self):
        return [e for r in self.results for e in r.get_asset_materialization_events()]

    def get_asset_check_evaluations(self):
        return [e for r in self.results for e in r.get_asset_check_evaluations()]

    @property
    def all_events(self):
        return [e for r in self.results for e in r.all_events]


def ingest(defs: dg.Definitions, instance, batch_id: str, config: dict | None = None) -> Runs:
    """Run ``ingest_batch`` (stage, check, append) for one batch in-process, as the inbox
    sensor's run would."""
    instance.add_dynamic_partitions("batches", [batch_id])
    run_config = {"ops": {"staged_batch": {"config": config}}} if config else None
    return Runs([defs.resolve_job_def("ingest_batch").execute_in_process(
        partition_key=batch_id, instance=instance, raise_on_error=False, run_config=run_config)],
        instance)


def tag(defs: dg.Definitions, instance, name: str | None = None, message: str | None = None,
        **kwargs):
    """Run ``tag_release`` in-process with its config (as the launchpad or the schedule does)."""
    config = {k: v for k, v in {"name": name, "message": message}.items() if v is not None}
    return defs.resolve_job_def("tag_release").execute_in_process(
        run_config={"ops": {"tag_store": {"config": config}}}, instance=instance, **kwargs)


def check_evaluations(result) -> dict[str, object]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def materializations(result) -> dict[str, dict]:
    out = {}
    for event in result.get_asset_materialization_events():
        m = event.materialization
        out[m.asset_key.to_user_string()] = {k: v.value for k, v in m.metadata.items()}
    return out
