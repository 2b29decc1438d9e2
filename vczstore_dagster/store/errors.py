"""One exception family. Messages are written for operators: they name the field, sample or batch."""

from __future__ import annotations


class VczStoreError(Exception):
    """Base of every error the engine raises on purpose."""


class StoreNotFoundError(VczStoreError):
    """The store URL points at nothing usable."""


class StorageUnavailableError(VczStoreError):
    """The storage did not answer, or refused the credentials."""


class InvalidInputError(VczStoreError):
    """A batch, a file or an argument is not what the operation needs."""


class ReleaseReplacedError(InvalidInputError):
    """A release that a purge redacted: it is no longer there, ``replaced_by`` is."""

    def __init__(self, message: str, *, release: str, replaced_by: str, redacted_at: str | None):
        super().__init__(message)
        self.release, self.replaced_by, self.redacted_at = release, replaced_by, redacted_at


class IncompatibleBatchError(VczStoreError):
    """A batch failed its compatibility check; ``report`` holds every finding."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class ConcurrentWriteError(VczStoreError):
    """Another writer kept moving ``main`` and the operation ran out of retries."""


class AuditError(VczStoreError):
    """The written result did not pass its audit; ``main`` was not moved."""


class ClusterError(VczStoreError):
    """The Dask scheduler did not answer, or the cluster lost the chunk work; ``main`` was not moved."""


class LockTimeoutError(ConcurrentWriteError):
    """Another writer held the store's lock file longer than the lock timeout."""


class StoreDamagedError(VczStoreError):
    """A file of the store's repository cannot be decoded (truncated or overwritten)."""
