"""The store's own record, kept in the root group's attributes under ``vczstore``.

It lists the batches appended (id and sample range), the releases, and the withdrawn registry as
salted hashes. It never holds a sample ID.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from datetime import UTC, datetime

LEDGER_KEY = "vczstore"
LEDGER_VERSION = 1


@dataclasses.dataclass
class BatchRecord:
    batch_id: str
    sample_start: int
    sample_stop: int
    appended_at: str
    parent_snapshot: str | None = None

    @property
    def num_samples(self) -> int:
        return self.sample_stop - self.sample_start


@dataclasses.dataclass
class ReleaseRecord:
    """A release as the ledger keeps it. A purge that redacts release ``2026-11`` records
    ``replaced_by="2026-11-r1"`` on it and ``replaces="2026-11"`` on the new one, both with the
    time of the redaction; ``created_at`` stays the original release's."""

    name: str
    created_at: str
    active_samples: int
    batches: list[str]
    message: str = ""
    withdrawals_since_previous: int = 0
    replaces: str | None = None
    replaced_by: str | None = None
    redacted_at: str | None = None
    samples_redacted: int = 0  # withdrawn samples removed by this release's redactions, in all


@dataclasses.dataclass
class Ledger:
    salt: str
    batches: list[BatchRecord] = dataclasses.field(default_factory=list)
    withdrawn: list[str] = dataclasses.field(default_factory=list)
    withdrawals: int = 0
    releases: list[ReleaseRecord] = dataclasses.field(default_factory=list)
    stale_info_fields: list[str] = dataclasses.field(default_factory=list)
    stats_release: str | None = None
    # sample-chunk columns holding chunks written at the fast level (store/recompress.py)
    fast_level_columns: list[int] = dataclasses.field(default_factory=list)

    @classmethod
    def new(cls) -> Ledger:
        return cls(salt=secrets.token_hex(16))

    @classmethod
    def from_attrs(cls, attrs) -> Ledger:
        raw = dict(attrs.get(LEDGER_KEY) or {})
        if not raw:
            return cls.new()
        return cls(
            salt=raw["salt"],
            batches=[BatchRecord(**b) for b in raw.get("batches", [])],
            withdrawn=list(raw.get("withdrawn", [])),
            withdrawals=int(raw.get("withdrawals", 0)),
            releases=[ReleaseRecord(**r) for r in raw.get("releases", [])],
            stale_info_fields=list(raw.get("stale_info_fields", [])),
            stats_release=raw.get("stats_release"),
            fast_level_columns=[int(c) for c in raw.get("fast_level_columns", [])],
        )

    def to_attrs(self) -> dict:
        return {
            "version": LEDGER_VERSION,
            "salt": self.salt,
            "batches": [dataclasses.asdict(b) for b in self.batches],
            "withdrawn": self.withdrawn,
            "withdrawals": self.withdrawals,
            "releases": [dataclasses.asdict(r) for r in self.releases],
            "stale_info_fields": self.stale_info_fields,
            "stats_release": self.stats_release,
            "fast_level_columns": self.fast_level_columns,
        }

    def hash_sample(self, sample_id: str) -> str:
        return salted_hash(self.salt, sample_id)

    def is_withdrawn(self, sample_id: str) -> bool:
        return self.hash_sample(sample_id) in set(self.withdrawn)

    def batch_ids(self) -> list[str]:
        return [b.batch_id for b in self.batches]

    def release(self, name: str) -> ReleaseRecord | None:
        return next((r for r in self.releases if r.name == name), None)

    def replaced_by(self, name: str) -> str | None:
        """The release that replaced release ``name`` (ledgers written before ``replaced_by`` was
        kept say it only through the new release's ``replaces``)."""
        record = self.release(name)
        if record is None:
            return None
        return record.replaced_by or next((r.name for r in self.releases if r.replaces == name),
                                          None)


def salted_hash(salt: str, value: str) -> str:
    return hashlib.sha256(f"{salt}:{value}".encode()).hexdigest()[:32]


def read_ledger(group) -> Ledger:
    return Ledger.from_attrs(group.attrs)


def write_ledger(group, ledger: Ledger) -> None:
    group.attrs.update({LEDGER_KEY: ledger.to_attrs()})


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
