"""``make dev``'s preparation: example batches (one incompatible) and the Dagster home."""

from __future__ import annotations

import yaml

from vczstore_dagster.dev import prepare_dagster_home, write_example_batches


def test_example_batches_are_written_once_and_marked_ready(tmp_path):
    inbox = tmp_path / "inbox"
    written = write_example_batches(inbox)
    assert len(written) == 4 and any("extra-alleles" in name for name in written)
    for name in written:
        files = sorted(p.name for p in (inbox / name).iterdir())
        assert files == sorted(["_READY", f"{name}.vcf"])
    assert write_example_batches(inbox) == []


def test_dagster_home_has_the_instance_config_and_no_welcome_popup(tmp_path):
    home = tmp_path / "home"
    prepare_dagster_home(home)
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    assert config["telemetry"] == {"enabled": False}
    assert config["concurrency"]["pools"]["granularity"] == "op"
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    assert (home / ".nux" / "nux.yaml").exists()
