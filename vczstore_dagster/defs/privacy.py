"""Keeping sample IDs out of Dagster: its event log, run config and tags are kept forever.

Assets report counts only. Anything else that reaches the event log (an error message, a finding)
is first redacted against the sample IDs the step handled.
"""

from __future__ import annotations

import gzip
import io
import itertools
import pathlib
import struct
import traceback
from collections.abc import Callable, Iterable
from typing import BinaryIO

import dagster as dg

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


def vcf_sample_ids(fileobj: BinaryIO) -> list[str]:
    """Sample IDs from the header of a VCF (plain, gzip or bgzip) or BCF, read from a binary file."""
    magic = fileobj.read(2)
    fileobj.seek(0)
    stream = gzip.GzipFile(fileobj=fileobj) if magic == b"\x1f\x8b" else fileobj
    start = stream.read(5)
    if start.startswith(b"BCF"):
        header_length = struct.unpack("<I", stream.read(4))[0]
        lines = stream.read(header_length).decode("utf-8", "replace").splitlines()
    else:
        lines = itertools.chain(
            [start.decode("utf-8", "replace") + stream.readline().decode("utf-8", "replace")],
            io.TextIOWrapper(stream, encoding="utf-8", errors="replace"),
        )
    for line in lines:
        if line.startswith("#CHROM"):
            return line.rstrip("\r\n\x00").split("\t")[9:]
        if not line.startswith("#"):
            break
    return []


def vcz_sample_ids(path: str | pathlib.Path, storage_options: dict | None = None) -> list[str]:
    import zarr

    group = zarr.open_group(str(path), mode="r", storage_options=storage_options)
    return [str(s) for s in group["sample_id"][:]]
