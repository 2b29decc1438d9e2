"""The store engine: plain Python over zarr, icechunk and bio2zarr. No Dagster imports.

Every operation takes a :class:`Store` (from :func:`open_store`) and returns a small result
dataclass. Every failure an operator can cause raises a :class:`VczStoreError` subclass whose
message names the problem. Heavy modules are imported inside functions so that ``vczstore --help``
stays instant.

    store = open_store("data/store")                       # or "s3://bucket/prefix", storage_options=...
    convert_vcfs(["b1.vcf.gz"], "staging/b1.vcz", like=store)   # harmonised to the store's variants
    report = check_batch(store, "staging/b1.vcz")           # CompatibilityReport (report.plan: coverage)
    result = append_batch(store, "staging/b1.vcz", batch_id="b1")   # AppendResult
    tag_release(store, "2026-11")                           # ReleaseResult
    store_info(store, at="2026-11")                         # StoreInfo
    widen_field(store, "call_DP", "int16")                  # WidenResult
    write_vcf(store, "r.vcf", at="2026-11", selection=Selection(regions=["chr1:1-1000000"]))
    release_dataset(store, "2026-11")                       # xarray.Dataset, withdrawn samples dropped
"""

from vczstore_dagster.store.append import AppendResult, append_batch
from vczstore_dagster.store.compatibility import CompatibilityReport, Finding, check_batch
from vczstore_dagster.store.convert import ConvertResult, convert_vcfs
from vczstore_dagster.store.create import InitResult, init_store
from vczstore_dagster.store.dataset import open_release, release_dataset, shown_samples
from vczstore_dagster.store.errors import (
    AuditError,
    ConcurrentWriteError,
    IncompatibleBatchError,
    InvalidInputError,
    LockTimeoutError,
    ReleaseReplacedError,
    StorageUnavailableError,
    StoreDamagedError,
    StoreNotFoundError,
    VczStoreError,
)
from vczstore_dagster.store.harmonise import harmonise_batch
from vczstore_dagster.store.inspect import SampleAxisAudit, StoreInfo, audit_sample_axis, store_info
from vczstore_dagster.store.location import Store, open_store, parse_storage_options
from vczstore_dagster.store.plan import NewAllele, VariantPlan
from vczstore_dagster.store.policy import Thresholds
from vczstore_dagster.store.release import Release, ReleaseResult, list_releases, tag_release
from vczstore_dagster.store.view import Selection, write_vcf
from vczstore_dagster.store.widen import WidenResult, widen_field

__all__ = [
    "AppendResult",
    "AuditError",
    "CompatibilityReport",
    "ConcurrentWriteError",
    "ConvertResult",
    "Finding",
    "IncompatibleBatchError",
    "InitResult",
    "InvalidInputError",
    "LockTimeoutError",
    "NewAllele",
    "Release",
    "ReleaseReplacedError",
    "ReleaseResult",
    "Selection",
    "Store",
    "StoreDamagedError",
    "StoreInfo",
    "StoreNotFoundError",
    "StorageUnavailableError",
    "Thresholds",
    "VariantPlan",
    "VczStoreError",
    "WidenResult",
    "append_batch",
    "check_batch",
    "convert_vcfs",
    "harmonise_batch",
    "init_store",
    "list_releases",
    "open_release",
    "open_store",
    "parse_storage_options",
    "release_dataset",
    "shown_samples",
    "store_info",
    "audit_sample_axis",
    "SampleAxisAudit",
    "tag_release",
    "widen_field",
    "write_vcf",
]
