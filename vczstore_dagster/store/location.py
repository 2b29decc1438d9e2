"""Where a store lives and how to open it: a local path or ``s3://bucket/prefix``, Icechunk or plain Zarr."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import re
from urllib.parse import urlparse

from vczstore_dagster.store.errors import (
    InvalidInputError,
    ReleaseReplacedError,
    StorageUnavailableError,
    StoreDamagedError,
    StoreNotFoundError,
)

BACKENDS = ("icechunk", "zarr")
S3_OPTION_KEYS = {
    "endpoint_url",
    "region",
    "allow_http",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "anonymous",
    "force_path_style",
}
S3_OPTION_ALIASES = {
    "aws_access_key_id": "access_key_id",
    "key": "access_key_id",
    "aws_secret_access_key": "secret_access_key",
    "secret": "secret_access_key",
    "aws_session_token": "session_token",
    "token": "session_token",
    "region_name": "region",
    "endpoint": "endpoint_url",
}


def parse_storage_options(pairs) -> dict:
    """``["endpoint_url=http://...", "allow_http=true"]`` → a dict with typed values."""
    options = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise InvalidInputError(f"storage option {pair!r} is not KEY=VALUE")
        key, value = pair.split("=", 1)
        options[key.strip()] = value.strip()
    return normalise_s3_options(options)


def normalise_s3_options(options: dict | None) -> dict:
    out = {}
    for key, value in (options or {}).items():
        key = S3_OPTION_ALIASES.get(key, key)
        if key not in S3_OPTION_KEYS:
            raise InvalidInputError(
                f"unknown storage option {key!r}; known: {', '.join(sorted(S3_OPTION_KEYS))}"
            )
        if key in ("allow_http", "anonymous", "force_path_style") and isinstance(value, str):
            value = value.lower() in ("1", "true", "yes", "on")
        out[key] = value
    return out


def s3_options_from_env(options: dict) -> dict:
    """Fill what the caller did not give from the usual AWS variables (and VCZSTORE_S3_ENDPOINT)."""
    out = dict(options)
    env = os.environ
    if "endpoint_url" not in out:
        endpoint = env.get("VCZSTORE_S3_ENDPOINT") or env.get("AWS_ENDPOINT_URL_S3") or env.get(
            "AWS_ENDPOINT_URL"
        )
        if endpoint:
            out["endpoint_url"] = endpoint
    if "region" not in out:
        out["region"] = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    if "access_key_id" not in out and env.get("AWS_ACCESS_KEY_ID"):
        out["access_key_id"] = env["AWS_ACCESS_KEY_ID"]
        out.setdefault("secret_access_key", env.get("AWS_SECRET_ACCESS_KEY"))
        if env.get("AWS_SESSION_TOKEN"):
            out.setdefault("session_token", env["AWS_SESSION_TOKEN"])
    endpoint = out.get("endpoint_url")
    if endpoint and endpoint.startswith("http://"):
        out.setdefault("allow_http", True)
    if endpoint:
        out.setdefault("force_path_style", True)
    return out


def s3fs_kwargs(options: dict) -> dict:
    """The same options in the shape s3fs (and zarr's FsspecStore) takes."""
    kwargs: dict = {"client_kwargs": {}}
    if options.get("endpoint_url"):
        kwargs["endpoint_url"] = options["endpoint_url"]
    if options.get("region"):
        kwargs["client_kwargs"]["region_name"] = options["region"]
    if options.get("access_key_id"):
        kwargs["key"] = options["access_key_id"]
        kwargs["secret"] = options.get("secret_access_key")
    if options.get("session_token"):
        kwargs["token"] = options["session_token"]
    if options.get("anonymous"):
        kwargs["anon"] = True
    kwargs["config_kwargs"] = {
        "connect_timeout": 5,
        "read_timeout": 30,
        "retries": {"max_attempts": 2},
    }
    return kwargs


@dataclasses.dataclass(frozen=True)
class Location:
    """A parsed store URL: ``path`` for local stores, ``bucket`` and ``prefix`` for S3."""

    url: str
    scheme: str  # "file" or "s3"
    path: str = ""
    bucket: str = ""
    prefix: str = ""
    options: dict = dataclasses.field(default_factory=dict, compare=False)
    lock_timeout: float | None = dataclasses.field(default=None, compare=False)

    @classmethod
    def parse(cls, url: str, storage_options: dict | None = None) -> Location:
        url = str(url)
        options = normalise_s3_options(storage_options)
        if url.startswith("s3://"):
            parsed = urlparse(url)
            prefix = parsed.path.strip("/")
            if not parsed.netloc:
                raise InvalidInputError(f"{url}: an S3 URL needs a bucket (s3://bucket/prefix)")
            if not prefix:
                raise InvalidInputError(
                    f"{url}: a store cannot live at a bucket root; add a prefix (s3://bucket/prefix)"
                )
            return cls(url, "s3", bucket=parsed.netloc, prefix=prefix,
                       options=s3_options_from_env(options))
        if "://" in url and not url.startswith("file://"):
            raise InvalidInputError(f"{url}: only local paths and s3:// URLs are supported")
        if options:
            raise InvalidInputError(f"{url}: storage options apply to s3:// stores only")
        path = url.removeprefix("file://")
        return cls(url, "file", path=str(pathlib.Path(path).absolute()))

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    def icechunk_storage(self):
        import icechunk

        quiet_icechunk()
        if self.is_local:
            return icechunk.local_filesystem_storage(self.path)
        o = self.options
        kwargs = dict(
            bucket=self.bucket,
            prefix=self.prefix,
            region=o.get("region"),
            endpoint_url=o.get("endpoint_url"),
            allow_http=bool(o.get("allow_http", False)),
            force_path_style=bool(o.get("force_path_style", False)),
            network_stream_timeout_seconds=30,
        )
        if o.get("anonymous"):
            kwargs["anonymous"] = True
        elif o.get("access_key_id"):
            kwargs["access_key_id"] = o["access_key_id"]
            kwargs["secret_access_key"] = o.get("secret_access_key")
            if o.get("session_token"):
                kwargs["session_token"] = o["session_token"]
        else:
            kwargs["from_env"] = True
        return icechunk.s3_storage(**kwargs)

    def zarr_store(self, read_only: bool = True):
        """A zarr Store over the location, for plain Zarr stores and batches."""
        from zarr.storage import FsspecStore, LocalStore

        if self.is_local:
            return LocalStore(self.path, read_only=read_only)
        import s3fs

        fs = s3fs.S3FileSystem(asynchronous=True, **s3fs_kwargs(self.options))
        return FsspecStore(fs, path=f"{self.bucket}/{self.prefix}", read_only=read_only)

    def write_lock(self, operation: str = "write"):
        """An exclusive lock beside a local store (``STORE.lock``), held by one writer from its
        first ref change to its last: Icechunk on a local disk can lose concurrent commits and
        ref changes. Re-entrant within a thread; nothing to hold on S3 (compare-and-swap)."""
        if not self.is_local:
            return contextlib.nullcontext()
        from vczstore_dagster.store.lock import write_lock

        return write_lock(self.path + ".lock", operation, self.lock_timeout)


def quiet_icechunk() -> None:
    """Icechunk's Rust layer warns on every local open; keep operators' terminals and logs clean."""
    import icechunk

    if not os.environ.get("VCZSTORE_ICECHUNK_LOG"):
        icechunk.set_logs_filter("error")
    else:
        icechunk.set_logs_filter(os.environ["VCZSTORE_ICECHUNK_LOG"])


def repository_config():
    """Split manifests along the samples dimension so an append rewrites only its own manifests."""
    import icechunk

    quiet_icechunk()
    split = icechunk.ManifestSplittingConfig.from_dict(
        {
            icechunk.ManifestSplitCondition.name_matches("call_.*|sample_id"): {
                icechunk.ManifestSplitDimCondition.DimensionName("samples"): 1,
                icechunk.ManifestSplitDimCondition.Any(): 1_000_000_000,
            }
        }
    )
    return icechunk.RepositoryConfig(
        manifest=icechunk.ManifestConfig(splitting=split),
        storage=icechunk.StorageSettings(
            retries=icechunk.StorageRetriesSettings(
                max_tries=3, initial_backoff_ms=100, max_backoff_ms=1000
            ),
            timeouts=icechunk.StorageTimeoutSettings(
                connect_timeout_ms=3000, operation_attempt_timeout_ms=60_000
            ),
        ),
    )


def storage_error(location: Location, exc: Exception,
                  snapshot_id: str | None = None) -> StorageUnavailableError | StoreDamagedError:
    """An Icechunk error as an operator's error: a damaged repository file named, or the storage
    (its endpoint, its credentials) blamed."""
    damaged = _damaged_file(exc, snapshot_id)
    if damaged is not None:
        return _damaged(location, exc, damaged)
    text = str(exc)
    lowered = text.lower()
    if any(w in lowered for w in ("invalidaccesskeyid", "signaturedoesnotmatch", "accessdenied",
                                  "forbidden", "403", "credentials")):
        reason = "the storage refused the credentials"
    elif any(w in lowered for w in ("connect", "dispatch", "timed out", "timeout", "dns", "refused")):
        reason = "the storage endpoint did not answer"
    else:
        reason = "the storage could not be read"
    endpoint = location.options.get("endpoint_url")
    where = f" (endpoint {endpoint})" if endpoint else ""
    first_line = text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
    return StorageUnavailableError(f"{location.url}{where}: {reason}: {first_line}")


# What Icechunk says when a file of the repository does not decode or is not there.
_DAMAGE = re.compile(r"frame descriptor|src size is incorrect|decompress|deserializ|magic number"
                     r"|icechunk header|object not found|requested range was invalid|unexpected end",
                     re.IGNORECASE)


def _damaged_file(exc: Exception, snapshot_id: str | None) -> str | None:
    """The repository file an Icechunk error says is damaged ("" if it does not say which), or
    None when the error is not about a damaged file."""
    import icechunk

    text = str(exc)
    if not (isinstance(exc, icechunk.FormatError) or _DAMAGE.search(text)):
        return None
    if m := re.search(r'path="([^"]+)"', text):
        return m[1]
    if "fetch_repo_info" in text:
        return "repo"
    for key, folder in (("manifest_id", "manifests"), ("snapshot_id", "snapshots"),
                        ("chunk_id", "chunks")):
        if m := re.search(rf"{key}=(\w+)", text):
            return f"{folder}/{m[1]}"
    return f"snapshots/{snapshot_id}" if snapshot_id else ""


def _damaged(location: Location, exc: Exception, relative: str) -> StoreDamagedError:
    root = location.path if location.is_local else location.url.rstrip("/")
    first_line = str(exc).strip().splitlines()[0][:200]
    missing = "not found" in first_line.lower()
    what = f"its file {root}/{relative}" if relative else "one of its files"
    problem = "is missing" if missing else "cannot be decoded (truncated or overwritten)"
    advice = "restore the store from a backup"
    if relative == "repo":
        advice = (f"restore {relative} from a backup, or from the newest copy under "
                  f"{root}/overwritten/ (the repository as it was before its last change)")
    elif relative:
        advice = f"restore {relative} (or the whole store) from a backup"
    return StoreDamagedError(
        f"{location.url}: the Icechunk repository is damaged: {what} {problem} ({first_line}). "
        f"Nothing was written; {advice}, and do not write to the store until then"
    )


@dataclasses.dataclass
class Store:
    """An opened store. ``repo`` is the Icechunk repository (None for plain Zarr)."""

    location: Location
    backend: str
    repo: object = None

    @property
    def url(self) -> str:
        return self.location.url

    def readonly_group(self, at: str | None = None):
        """The root zarr group at ``at``: a branch, tag or snapshot id (Icechunk), or the head."""
        import zarr

        if self.backend == "zarr":
            if at not in (None, "main"):
                raise InvalidInputError(
                    f"{self.url}: a plain Zarr store has no history; --at {at} needs Icechunk"
                )
            try:
                return zarr.open_group(self.location.zarr_store(read_only=True), mode="r",
                                       use_consolidated=True)
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                raise InvalidInputError(
                    f"{self.url}: the store's root metadata (zarr.json, .zgroup or .zmetadata) "
                    f"is corrupt or incomplete: {exc}"
                ) from exc
            except FileNotFoundError as exc:
                raise StoreNotFoundError(f"{self.url}: the store's root metadata is missing") from exc
        import icechunk

        session = self.readonly_session(at)
        try:
            return zarr.open_group(session.store, mode="r")
        except zarr.errors.GroupNotFoundError as exc:  # the repository's empty first snapshot
            raise StoreNotFoundError(
                f"{self.url}: the Icechunk repository holds no store at {at or 'main'} yet: an init "
                "is still writing it, or stopped before its first commit (then delete the "
                "repository and run init again)"
            ) from exc
        except icechunk.IcechunkError as exc:
            raise storage_error(self.location, exc, session.snapshot_id) from exc

    def readonly_session(self, at: str | None = None):
        """A read-only session at a branch, release tag or snapshot id; a release that a purge
        replaced is named with its replacement."""
        import icechunk

        at = at or "main"
        try:
            if at in self.repo.list_branches():
                return self.repo.readonly_session(branch=at)
            if at in self.repo.list_tags():
                return self.repo.readonly_session(tag=at)
        except icechunk.IcechunkError as exc:
            raise storage_error(self.location, exc) from exc
        try:
            return self.repo.readonly_session(snapshot_id=at)
        except icechunk.IcechunkError as exc:
            if _damaged_file(exc, None) is not None:
                raise storage_error(self.location, exc) from exc
            error = exc
        from vczstore_dagster.store.ledger import read_ledger

        ledger = read_ledger(self.readonly_group())
        replaced_by = ledger.replaced_by(at)
        if replaced_by is not None:
            when = ledger.release(at).redacted_at
            raise ReleaseReplacedError(
                f"{self.url}: release {at} was replaced by {replaced_by}"
                + (f" (redacted on {when})" if when else "")
                + f": samples withdrawn after it was made were removed; read or cite {replaced_by}",
                release=at, replaced_by=replaced_by, redacted_at=when,
            ) from error
        raise InvalidInputError(
            f"{self.url}: no branch, release tag or snapshot called {at!r}"
        ) from error

    def main_snapshot(self) -> str | None:
        if self.backend != "icechunk":
            return None
        return self.repo.lookup_branch("main")


def detect_backend(location: Location) -> str | None:
    """'icechunk', 'zarr' or None when nothing is there."""
    if location.is_local:
        p = pathlib.Path(location.path)
        if not p.exists():
            return None
        if (p / "repo").exists() or (p / "refs").exists() or (p / "snapshots").exists():
            return "icechunk"
        if (p / "zarr.json").exists() or (p / ".zgroup").exists():
            return "zarr"
        return None
    # A quick listing with short timeouts: Icechunk's own probe retries for tens of seconds
    # against an endpoint that does not answer.
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3fs_kwargs(location.options))
    root = f"{location.bucket}/{location.prefix}"
    try:
        if fs.exists(f"{root}/repo"):
            return "icechunk"
        for key in ("zarr.json", ".zgroup"):
            if fs.exists(f"{root}/{key}"):
                return "zarr"
    except Exception as exc:
        raise storage_error(location, exc) from exc
    return None


def open_store(url: str, *, storage_options: dict | None = None, backend: str | None = None,
               lock_timeout: float | None = None) -> Store:
    """Open an existing store; the backend is detected unless forced. ``lock_timeout``: seconds
    a writer waits for another's lock on a local store (default ``VCZSTORE_LOCK_TIMEOUT``)."""
    import icechunk

    location = dataclasses.replace(Location.parse(url, storage_options), lock_timeout=lock_timeout)
    if backend is not None and backend not in BACKENDS:
        raise InvalidInputError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    detected = detect_backend(location)
    if detected is None:
        raise StoreNotFoundError(f"{url}: no store there (neither an Icechunk repository nor a Zarr group)")
    if backend is not None and backend != detected:
        raise InvalidInputError(f"{url}: is a {detected} store, not {backend}")
    if detected == "zarr":
        return Store(location, "zarr")
    try:
        repo = icechunk.Repository.open(location.icechunk_storage(), config=repository_config())
    except icechunk.IcechunkError as exc:
        raise storage_error(location, exc) from exc
    return Store(location, "icechunk", repo)
