"""Sensors evaluated against a real (SQLite) instance, as the daemon would on each tick."""

from __future__ import annotations

import dagster as dg
import pytest


def tick(defs, instance, name: str, cursor: str | None):
    sensor = defs.resolve_sensor_def(name)
    # As the daemon builds it: resources in the context, and an instance ref (without one the
    # tick cannot resolve a run request for a partition added in the same tick).
    context = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(),
                                      definitions=defs, cursor=cursor, resources=defs.resources)
    result = sensor.evaluate_tick(context)
    # What the daemon does with the tick's partition requests.
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def test_ready_batch_is_requested_once(project, vcf_batch, instance):
    project.drop_batch("batch-1", [vcf_batch("A", 4)])
    defs = project.definitions()

    first = tick(defs, instance, "inbox_sensor", None)
    assert [r.partition_key for r in first.run_requests] == ["batch-1"]
    assert first.run_requests[0].job_name in (None, "ingest_batch")
    [add] = first.dynamic_partitions_requests
    assert (add.partitions_def_name, list(add.partition_keys)) == ("batches", ["batch-1"])
    assert instance.get_dynamic_partitions("batches") == ["batch-1"]

    second = tick(defs, instance, "inbox_sensor", first.cursor)
    assert second.run_requests == []
    assert not second.dynamic_partitions_requests
    assert "No new ready batch" in second.skip_message
    assert instance.get_dynamic_partitions("batches") == ["batch-1"]


def test_folder_without_ready_waits(project, vcf_batch, instance):
    project.drop_batch("still-uploading", [vcf_batch("A", 4)], ready=False)
    defs = project.definitions()
    result = tick(defs, instance, "inbox_sensor", None)
    assert result.run_requests == []
    assert "Waiting for _READY: still-uploading" in result.skip_message
    assert instance.get_dynamic_partitions("batches") == []

    (project.inbox / "still-uploading" / "_READY").touch()
    result = tick(defs, instance, "inbox_sensor", result.cursor)
    assert [r.partition_key for r in result.run_requests] == ["still-uploading"]


@pytest.mark.parametrize(
    ("name", "shown", "why"),
    [
        ("a,b", "'a,b'", "comma"),
        ("a..b", "'a..b'", "'..'"),
        ("tab\there", "'tab\\there'", "control characters"),
        ("x" * 101, "'" + "x" * 60 + "...'", "longer than 100"),
        ("back\\slash", "'back\\\\slash'", "path separator"),
    ],
)
def test_unsafe_folder_name_is_skipped_with_a_reason(project, vcf_batch, instance, name, shown, why):
    project.drop_batch(name, [vcf_batch("A", 4)])
    defs = project.definitions()
    result = tick(defs, instance, "inbox_sensor", None)
    assert result.run_requests == []
    message = result.skip_message
    assert "not a safe batch id" in message
    assert shown in message and why in message
    assert instance.get_dynamic_partitions("batches") == []
    # And never later either.
    again = tick(defs, instance, "inbox_sensor", result.cursor)
    assert again.run_requests == []


def test_ready_folder_without_vcf_is_reported(project, instance):
    folder = project.inbox / "empty-batch"
    folder.mkdir()
    (folder / "_READY").touch()
    result = tick(project.definitions(), instance, "inbox_sensor", None)
    assert result.run_requests == []
    assert "empty-batch (holds no VCF file" in result.skip_message


def test_new_request_file_is_requested_once(project, instance):
    project.request_withdrawal("request-1", ["SOMEONE"])
    (project.withdrawals / "notes.md").write_text("not a request")
    defs = project.definitions()
    first = tick(defs, instance, "withdrawal_sensor", None)
    assert [r.partition_key for r in first.run_requests] == ["request-1"]
    assert instance.get_dynamic_partitions("withdrawals") == ["request-1"]
    # The request's contents go nowhere near the run request.
    assert "SOMEONE" not in repr(first.run_requests)
    second = tick(defs, instance, "withdrawal_sensor", first.cursor)
    assert second.run_requests == []
    assert "No new withdrawal request" in second.skip_message


def test_request_named_after_a_listed_sample_is_not_processed_nor_named(project, instance):
    project.request_withdrawal("withdraw-P00042", ["P00042", "P00043"])
    result = tick(project.definitions(), instance, "withdrawal_sensor", None)
    assert result.run_requests == []
    assert "1 request file(s) not processed: the file name contains a sample ID" in result.skip_message
    assert "P0004" not in result.skip_message
    assert instance.get_dynamic_partitions("withdrawals") == []
