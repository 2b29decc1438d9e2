"""Keeping sample IDs out of Dagster: its event log, run config and tags are kept forever.

Assets report counts only. Anything else that reaches the event log (an error message, a finding)
is first redacted against the sample IDs the step handled.
"""

from __future__ import annotations

import pathlib
import traceback
from collections.abc import Callable, Iterable

import dagster as dg

from vczstore_dagster.store.leftovers import vcf_sample_ids  # noqa: F401 - used from here too

REDACTED = "<sample>"


def redact(text: str, sample_ids: Iterable[str]) -> str:
    """``text`` with every occurrence of any of ``sample_ids`` replaced by ``<sample>``."""
    for sample_id in sorted({s for s in sample_ids if s}, key=len, reverse=True):
        if sample_id in text:
            text = text.replace(sample_id, REDACTED)
    return text


class EngineFailure(dg.Failure):
    """A redacted engine error; ``error_type`` names the original exception class."""

    def __init__(self, description: str, error_type: str, frames: str):
        super().__init__(
            description=description,
            metadata={"error_type": error_type, "traceback": dg.MetadataValue.text(frames)},
        )
        self.error_type = error_type


def call_engine(what: str, fn: Callable, *args, sample_ids: Iterable[str] = (), **kwargs):
    """``fn(*args, **kwargs)``; any error becomes a ``Failure`` whose message is redacted and
    which carries no chained exception (Dagster would record the original message with it)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - every message is redacted, whatever raised it
        error = exc
    message = redact(str(error), sample_ids)
    frames = "".join(traceback.format_tb(error.__traceback__))
    raise EngineFailure(f"{what} failed: {type(error).__name__}: {message}", type(error).__name__, frames)


def vcz_sample_ids(path: str | pathlib.Path, storage_options: dict | None = None) -> list[str]:
    import zarr

    group = zarr.open_group(str(path), mode="r", storage_options=storage_options)
    return [str(s) for s in group["sample_id"][:]]
