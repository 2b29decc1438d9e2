"""Inbox and withdrawals as ``s3://`` prefixes (a real moto_server), the store on local disk."""

from __future__ import annotations

import pathlib
import uuid

import dagster as dg

from vczstore_dagster.definitions import build_definitions
from vczstore_dagster.defs.resources import (
    InboxResource,
    S3Options,
    StagingResource,
    VczStoreResource,
    WithdrawalsResource,
)
from vczstore_dagster.store import open_store, schema
from vczstore_dagster_tests.defs.conftest import ingest, materializations
from vczstore_dagster_tests.defs.test_sensors import tick


def listed(client, bucket: str, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix)
                  .get("Contents", []))


def test_batch_and_request_from_s3(moto_s3, vcf_batch, tmp_path):
    prefix = f"drop-{uuid.uuid4().hex[:8]}"
    s3 = S3Options(endpoint_url=moto_s3.endpoint_url, region=moto_s3.region,
                   access_key_id=moto_s3.access_key_id,
                   secret_access_key=moto_s3.secret_access_key)
    defs = build_definitions({
        "store": VczStoreResource(url=str(tmp_path / "store")),
        "inbox": InboxResource(url=f"s3://{moto_s3.bucket}/{prefix}/inbox", s3=s3),
        "staging": StagingResource(path=str(tmp_path / "staging")),
        "withdrawals": WithdrawalsResource(url=f"s3://{moto_s3.bucket}/{prefix}/withdrawals", s3=s3),
    })
    client = moto_s3.client()
    vcf = pathlib.Path(vcf_batch("S3-", 5))
    for path in [vcf, *vcf.parent.glob(vcf.name + ".*")]:
        client.upload_file(str(path), moto_s3.bucket, f"{prefix}/inbox/from-s3/{path.name}")

    with dg.instance_for_test() as instance:
        waiting = tick(defs, instance, "inbox_sensor", None)
        assert "Waiting for _READY: from-s3" in waiting.skip_message
        client.put_object(Bucket=moto_s3.bucket, Key=f"{prefix}/inbox/from-s3/_READY", Body=b"")
        ready = tick(defs, instance, "inbox_sensor", waiting.cursor)
        assert [r.partition_key for r in ready.run_requests] == ["from-s3"]

        result = ingest(defs, instance, "from-s3")
        assert result.success and result.appended
        incoming = materializations(result)["incoming_batch"]
        assert incoming["num_samples"] == 5
        assert incoming["num_files"] == 2  # the VCF and its index
        # appended: the batch's folder is deleted from the S3 inbox
        assert listed(client, moto_s3.bucket, f"{prefix}/inbox/") == []

        client.put_object(Bucket=moto_s3.bucket, Key=f"{prefix}/withdrawals/req-1.txt",
                          Body=b"S3-00001\n")
        [request] = tick(defs, instance, "withdrawal_sensor", None).run_requests
        assert defs.resolve_job_def("withdraw_samples").execute_in_process(
            partition_key=request.partition_key, instance=instance).success
        # the request file is replaced by its receipt, on S3 too
        assert listed(client, moto_s3.bucket, f"{prefix}/withdrawals/") == [
            f"{prefix}/withdrawals/req-1.receipt.json"]

    ids = [str(s) for s in schema.strings(
        open_store(str(tmp_path / "store")).readonly_group()["sample_id"][...])]
    assert ids == ["S3-00000", "", "S3-00002", "S3-00003", "S3-00004"]
