"""Opening a store that is not there, not a store, corrupt, or behind storage that refuses us:
each is a clear error naming the problem, and nothing is created or changed."""

from __future__ import annotations

import json
import shutil
import uuid

import pytest

from vczstore_dagster_tests import helpers


def test_store_path_that_does_not_exist(tmp_path):
    from vczstore_dagster.store import StoreNotFoundError, open_store

    missing = tmp_path / "no" / "such" / "store"
    with pytest.raises(StoreNotFoundError) as err:
        open_store(str(missing))
    assert str(missing) in str(err.value)
    assert not missing.exists() and not (tmp_path / "no").exists(), "opening created files"


def test_s3_prefix_that_does_not_exist(moto_s3):
    from vczstore_dagster.store import StoreNotFoundError, open_store

    url = moto_s3.new_url("missing")
    with pytest.raises(StoreNotFoundError) as err:
        open_store(url, storage_options=moto_s3.storage_options)
    assert url in str(err.value)
    assert helpers.s3_digest(moto_s3, url) == {}, "opening created objects"


@pytest.mark.parametrize("kind", ["empty_dir", "files", "vcz_batch"])
def test_directory_that_is_not_a_store(tmp_path, vcf_batch, kind):
    """An empty directory, a directory of other files: not a store. A bare VCZ (a batch) is a plain
    Zarr group, so it may open as a plain Zarr store, but never as an Icechunk one."""
    from vczstore_dagster.store import InvalidInputError, StoreNotFoundError, open_store

    path = tmp_path / "dir"
    if kind == "vcz_batch":
        helpers.bio2zarr_convert([vcf_batch("D", 4, num_variants=60)], path, samples_chunk_size=4)
    else:
        path.mkdir()
        if kind == "files":
            (path / "notes.txt").write_text("hello\n")
            (path / "sub").mkdir()
            (path / "sub" / "x.bin").write_bytes(b"\0\1\2")
    before = helpers.tree_digest(path)
    if kind == "vcz_batch":
        with pytest.raises(InvalidInputError) as err:
            open_store(str(path), backend="icechunk")
        assert "zarr" in str(err.value).lower()
    else:
        with pytest.raises(StoreNotFoundError) as err:
            open_store(str(path))
        assert str(path) in str(err.value)
    helpers.assert_unchanged(before, helpers.tree_digest(path), "directory")


def test_icechunk_repository_before_its_first_commit(tmp_path):
    """What readers (a sensor, `vczstore info`) see while an init is still writing, or after an
    init stopped before its commit: a clear error, not zarr's "No group found"."""
    import icechunk

    from vczstore_dagster.store import StoreNotFoundError, open_store, store_info

    path = tmp_path / "store"
    icechunk.Repository.create(icechunk.local_filesystem_storage(str(path)))
    before = helpers.tree_digest(path)
    with pytest.raises(StoreNotFoundError, match="holds no store at main yet") as err:
        store_info(open_store(str(path)))
    assert str(path) in str(err.value)
    proc = helpers.run([helpers.venv_tool("vczstore"), "info", str(path)], check=False)
    assert proc.returncode != 0 and "holds no store at main yet" in proc.stderr
    assert helpers.tree_digest(path) == before


def test_plain_zarr_store_with_corrupt_zarr_json(make_store, vcf_batch, tmp_path):
    from vczstore_dagster.store import VczStoreError, open_store, store_info

    store, url = make_store("zarr3", [vcf_batch("C", 6, num_variants=60)], samples_chunk_size=4)
    root_meta = store.location.path + "/zarr.json"
    text = open(root_meta).read()
    json.loads(text)
    with open(root_meta, "w") as f:
        f.write(text[: len(text) // 3])
    before = helpers.tree_digest(url)
    with pytest.raises(VczStoreError) as err:
        store_info(open_store(url))
    assert "zarr.json" in str(err.value), str(err.value)
    assert url in str(err.value), str(err.value)
    helpers.assert_unchanged(before, helpers.tree_digest(url))


@pytest.mark.parametrize("damage", ["repo", "snapshot", "manifests"])
def test_icechunk_store_with_a_damaged_file(make_store, vcf_batch, damage):
    """A file of Icechunk's own damaged (cut in half): the error names that file, says what
    happened and what to do, and nothing is written."""
    import pathlib

    from vczstore_dagster.store import StoreDamagedError, open_store, store_info

    store, url = make_store("icechunk", [vcf_batch("C", 6, num_variants=60)], samples_chunk_size=4)
    root = pathlib.Path(url)
    if damage == "repo":
        targets = [root / "repo"]
    elif damage == "snapshot":
        targets = [root / "snapshots" / store.main_snapshot()]
    else:
        targets = sorted((root / "manifests").iterdir())
    for target in targets:
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    before = helpers.tree_digest(url)
    with pytest.raises(StoreDamagedError) as err:
        store_info(open_store(url))
    message = str(err.value)

    def names_one_damaged_file(text):
        return len([t for t in targets
                    if f"its file {t} cannot be decoded (truncated or overwritten)" in text]) == 1

    assert names_one_damaged_file(message), message
    assert message.startswith(f"{url}: the Icechunk repository is damaged: "), message
    assert "Nothing was written; restore " in message, message
    if damage == "repo":
        assert f"the newest copy under {url}/overwritten/" in message, message
    proc = helpers.run([helpers.venv_tool("vczstore"), "info", url], check=False)
    first_line = proc.stderr.splitlines()[0]
    assert proc.returncode == 1 and first_line.startswith(f"error: {url}: the Icechunk "), first_line
    assert names_one_damaged_file(first_line), first_line
    if damage != "manifests":  # several manifests are read at once; zarr leaves the reads still
        assert proc.stderr == f"error: {message}\n", proc.stderr  # pending to asyncio's warnings
    helpers.assert_unchanged(before, helpers.tree_digest(url))


def test_s3_endpoint_that_does_not_answer(moto_s3):
    from vczstore_dagster.store import StorageUnavailableError, open_store

    port = helpers.closed_port()
    options = {**moto_s3.storage_options, "endpoint_url": f"http://127.0.0.1:{port}"}
    url = f"s3://{moto_s3.bucket}/nobody-{uuid.uuid4().hex[:6]}"
    with pytest.raises(StorageUnavailableError) as err:
        open_store(url, storage_options=options)
    message = str(err.value)
    assert message.startswith(f"{url} (endpoint http://127.0.0.1:{port}): the storage endpoint "
                              "did not answer: "), message


@pytest.fixture
def iam_user(moto_s3):
    """An IAM user allowed everything; moto's auth is switched on only inside the test body."""
    iam = moto_s3.client(service="iam")
    name = f"u{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="all", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.mark.parametrize("wrong", ["unknown_key", "wrong_secret"])
def test_wrong_s3_credentials(make_store, vcf_batch, tmp_path, moto_s3, iam_user, wrong):
    from vczstore_dagster.store import StorageUnavailableError, open_store, store_info

    store, url = make_store("s3", [vcf_batch("W", 6, num_variants=60)], samples_chunk_size=4)
    before = helpers.s3_digest(moto_s3, url)
    key_id, secret = iam_user
    good = {**moto_s3.storage_options, "access_key_id": key_id, "secret_access_key": secret}
    if wrong == "unknown_key":
        bad = {**good, "access_key_id": "AKIANOTAREALKEY00000"}
    else:
        bad = {**good, "secret_access_key": secret[:-4] + "abcd"}
    moto_s3.set_auth(0)  # from now on moto checks every request against IAM
    try:
        with pytest.raises(StorageUnavailableError) as err:
            store_info(open_store(url, storage_options=bad))
        message = str(err.value)
        assert "credentials" in message, message
        assert url in message, message
        # the right credentials still work: the refusal was about the credentials
        assert store_info(open_store(url, storage_options=good)).num_samples == 6
    finally:
        moto_s3.set_auth(float("inf"))
    helpers.assert_unchanged(before, helpers.s3_digest(moto_s3, url))


def test_missing_s3_credentials_for_a_store(make_store, vcf_batch, moto_s3, iam_user,
                                            monkeypatch):
    """No credentials at all (none given, none in the environment) against an S3 that checks."""
    from vczstore_dagster.store import StorageUnavailableError, open_store, store_info

    store, url = make_store("s3", [vcf_batch("W", 6, num_variants=60)], samples_chunk_size=4)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    options = {k: v for k, v in moto_s3.storage_options.items()
               if k not in ("access_key_id", "secret_access_key")}
    moto_s3.set_auth(0)
    try:
        with pytest.raises(StorageUnavailableError) as err:
            store_info(open_store(url, storage_options=options))
        assert url in str(err.value)
    finally:
        moto_s3.set_auth(float("inf"))


def test_init_refuses_an_existing_store(make_store, vcf_batch, tmp_path):
    from vczstore_dagster.store import InvalidInputError, init_store

    vcf = vcf_batch("I", 6, num_variants=60)
    store, url = make_store("icechunk", [vcf], samples_chunk_size=4)
    vcz = helpers.bio2zarr_convert([vcf], tmp_path / "again.vcz", samples_chunk_size=4)
    before = helpers.tree_digest(url)
    with pytest.raises(InvalidInputError, match="already exists"):
        init_store(url, from_vcz=str(vcz))
    helpers.assert_unchanged(before, helpers.tree_digest(url))
    shutil.rmtree(vcz)
