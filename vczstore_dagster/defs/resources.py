"""Resources: where the store, the inbox, the staging area and the withdrawal requests live.

Every location is configured by an environment variable, read when the code location loads:
``VCZSTORE_URL``, ``VCZSTORE_INBOX``, ``VCZSTORE_STAGING``, ``VCZSTORE_WITHDRAWALS`` (defaults under
``./data``), and for S3 the usual ``AWS_*`` variables plus ``VCZSTORE_S3_ENDPOINT``. A variable that
is set is passed as an ``EnvVar``, so the UI shows its name and never its value. The thresholds a
batch must meet, ``VCZSTORE_MIN_SITE_COVERAGE`` and ``VCZSTORE_MAX_DROPPED_FRACTION`` (fractions;
default 0.5 each), are read as numbers; a run can set others in its ``staged_batch`` config. So
is ``VCZSTORE_CONVERT_PARTITIONS``: into how many partitions (steps) a batch's conversion is split.
"""

from __future__ import annotations

import os
import pathlib
import posixpath
import shutil

import dagster as dg
from pydantic import Field

from vczstore_dagster.defs.executors import step_io_manager
from vczstore_dagster.store import Store, StoreNotFoundError, Thresholds, open_store
from vczstore_dagster.store.location import normalise_s3_options, s3_options_from_env, s3fs_kwargs


class S3Options(dg.Config):
    """How to reach an S3-compatible endpoint. Empty fields fall back to the AWS variables."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None

    def engine_options(self) -> dict:
        """The options in the engine's shape, completed from the environment."""
        given = {k: v for k, v in self.model_dump().items() if v}
        return s3_options_from_env(normalise_s3_options(given))


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


class VczStoreResource(dg.ConfigurableResource):
    """The cohort's VCF Zarr store: a local path or ``s3://bucket/prefix``."""

    url: str
    backend: str | None = None
    float_compression: str | None = None  # blosc CNAME:LEVEL[:SHUFFLE] for float fields, at creation
    dask_scheduler: str | None = None  # chunk work on this Dask scheduler (an address, or "local")
    min_site_coverage: float = Thresholds.min_site_coverage
    """A batch covering less than this share of the store's sites is refused."""
    max_dropped_fraction: float = Thresholds.max_dropped_fraction
    """A batch more than this share of whose records are at no store site is refused."""
    s3: S3Options = S3Options()

    def storage_options(self) -> dict | None:
        return self.s3.engine_options() if is_s3(self.url) else None

    def open(self) -> Store:
        return open_store(self.url, storage_options=self.storage_options(), backend=self.backend)

    def open_if_exists(self) -> Store | None:
        """The store, or None when nothing has been created at ``url`` yet."""
        try:
            return self.open()
        except StoreNotFoundError:
            return None


class FolderResource(dg.ConfigurableResource):
    """A folder of files dropped by people or other systems: local, or an ``s3://`` prefix."""

    url: str
    s3: S3Options = S3Options()

    def filesystem(self):
        import fsspec

        if is_s3(self.url):
            return fsspec.filesystem("s3", **s3fs_kwargs(self.s3.engine_options()))
        return fsspec.filesystem("file")

    def root(self) -> str:
        if is_s3(self.url):
            return self.url.removeprefix("s3://").rstrip("/")
        return str(pathlib.Path(self.url).absolute())

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root(), *parts)

    def entries(self, *parts: str) -> list[dict]:
        """What is directly inside a subfolder: dicts with ``name`` (basename), ``type``, ``size``.
        A missing folder is empty."""
        fs = self.filesystem()
        where = self.path(*parts)
        try:
            listing = fs.ls(where, detail=True, refresh=True)
        except FileNotFoundError:
            return []
        out = []
        for entry in listing:
            name = posixpath.basename(entry["name"].rstrip("/"))
            if entry["name"].rstrip("/") == where.rstrip("/"):
                continue
            out.append({"name": name, "type": entry["type"], "size": entry.get("size") or 0})
        return sorted(out, key=lambda e: e["name"])

    def zarr_location(self, *parts: str) -> tuple[str, dict | None]:
        """A URL and storage options that ``zarr.open_group`` takes."""
        if is_s3(self.url):
            return "s3://" + self.path(*parts), s3fs_kwargs(self.s3.engine_options())
        return self.path(*parts), None

    def read_bytes(self, *parts: str) -> bytes:
        return self.filesystem().cat_file(self.path(*parts))

    def write_bytes(self, data: bytes, *parts: str) -> None:
        self.filesystem().pipe_file(self.path(*parts), data)

    def delete(self, *parts: str) -> bool:
        """Delete a file or folder (recursively); False when it was not there."""
        fs = self.filesystem()
        where = self.path(*parts)
        if not fs.exists(where):
            return False
        fs.rm(where, recursive=True)
        return True

    def fetch(self, parts: tuple[str, ...], destination: pathlib.Path) -> pathlib.Path:
        """Make a local copy of a file or folder (a local folder is copied too: the inbox is the
        sender's, and staging must not change under a running conversion)."""
        source = self.path(*parts)
        fs = self.filesystem()
        if destination.exists():
            shutil.rmtree(destination) if destination.is_dir() else destination.unlink()
        destination.parent.mkdir(parents=True, exist_ok=True)
        if fs.isdir(source):
            fs.get(source.rstrip("/") + "/", str(destination), recursive=True)
        else:
            fs.get(source, str(destination))
        return destination


class InboxResource(FolderResource):
    """Where batches arrive: one subfolder per batch, holding VCF file(s) or one VCZ, and
    ``_READY`` once the sender has finished writing it."""


class WithdrawalsResource(FolderResource):
    """Where withdrawal requests arrive: one ``*.txt`` per request, one sample ID per line."""


class StagingResource(dg.ConfigurableResource):
    """A scratch folder (local, or a volume every step's machine mounts at the same path): each
    batch is converted into the store's schema here."""

    path: str
    convert_partitions: int = Field(default=1, ge=1)
    """Into how many partitions (each a step) a batch's conversion is split, unless its run says."""

    def batch_dir(self, batch_id: str) -> pathlib.Path:
        return pathlib.Path(self.path).absolute() / batch_id

    def batch_vcz(self, batch_id: str) -> pathlib.Path:
        return self.batch_dir(batch_id) / f"{batch_id}.vcz"

    def conversion_dir(self, batch_id: str) -> pathlib.Path:
        return self.batch_dir(batch_id) / "conversion"


def _setting(name: str, default: str) -> str:
    """``EnvVar(name)`` when the variable is set (the UI shows the name, not the value), else the
    default."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def _fraction(name: str, default: float) -> float:
    setting = os.environ.get(name, "").strip()
    if not setting:
        return default
    try:
        value = float(setting)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise ValueError(f"{name}={setting!r}: expected a fraction from 0 to 1")
    return value


def _count(name: str, default: int) -> int:
    setting = os.environ.get(name, "").strip()
    if not setting:
        return default
    if not setting.isdigit() or int(setting) < 1:
        raise ValueError(f"{name}={setting!r}: expected a whole number of at least 1")
    return int(setting)


def _s3_options() -> S3Options:
    fields = {
        "endpoint_url": "VCZSTORE_S3_ENDPOINT",
        "region": "AWS_REGION",
        "access_key_id": "AWS_ACCESS_KEY_ID",
        "secret_access_key": "AWS_SECRET_ACCESS_KEY",
        "session_token": "AWS_SESSION_TOKEN",
    }
    return S3Options(**{field: dg.EnvVar(var) for field, var in fields.items() if os.environ.get(var)})


def resources_from_env(data_dir: str | os.PathLike = "data") -> dict:
    """The four resources, configured from the environment (defaults under ``data_dir``), and the
    IO manager of the steps' outputs when the executor puts steps on other machines."""
    data = pathlib.Path(data_dir).absolute()
    s3 = _s3_options()
    return {
        "store": VczStoreResource(
            url=_setting("VCZSTORE_URL", str(data / "store")),
            backend=os.environ.get("VCZSTORE_BACKEND") or None,
            float_compression=os.environ.get("VCZSTORE_FLOAT_COMPRESSION") or None,
            dask_scheduler=os.environ.get("VCZSTORE_DASK_SCHEDULER") or None,
            min_site_coverage=_fraction("VCZSTORE_MIN_SITE_COVERAGE", Thresholds.min_site_coverage),
            max_dropped_fraction=_fraction("VCZSTORE_MAX_DROPPED_FRACTION",
                                           Thresholds.max_dropped_fraction),
            s3=s3,
        ),
        "inbox": InboxResource(url=_setting("VCZSTORE_INBOX", str(data / "inbox")), s3=s3),
        "staging": StagingResource(path=_setting("VCZSTORE_STAGING", str(data / "staging")),
                                   convert_partitions=_count("VCZSTORE_CONVERT_PARTITIONS", 1)),
        "withdrawals": WithdrawalsResource(
            url=_setting("VCZSTORE_WITHDRAWALS", str(data / "withdrawals")), s3=s3
        ),
        **step_io_manager(),
    }
