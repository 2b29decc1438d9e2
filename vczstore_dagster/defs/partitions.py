"""Dynamic partitions: one per batch, per release and per withdrawal request."""

from __future__ import annotations

import unicodedata

import dagster as dg

from vczstore_dagster.store.batch import SAFE_ID

batches = dg.DynamicPartitionsDefinition(name="batches")
releases = dg.DynamicPartitionsDefinition(name="releases")
withdrawals = dg.DynamicPartitionsDefinition(name="withdrawals")

MAX_KEY_LENGTH = 100


def unsafe_key_reason(name: str) -> str | None:
    """Why ``name`` cannot be a partition key (it also becomes a staging folder name, a batch id in
    the store's ledger and part of run tags), or None when it can."""
    if not name or not name.strip():
        return "empty name"
    if len(name) > MAX_KEY_LENGTH:
        return f"longer than {MAX_KEY_LENGTH} characters"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if ".." in name:
        return "contains '..'"
    if "," in name:
        return "contains a comma"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        return "contains control characters"
    if not SAFE_ID.match(name):
        return "not a usable id (letters, digits, '.', '_' or '-', starting with a letter or digit)"
    return None


def printable(name: str, limit: int = 60) -> str:
    """A name fit for a log line or skip reason: escaped, and shortened."""
    shown = name if len(name) <= limit else name[:limit] + "..."
    return ascii(shown)
