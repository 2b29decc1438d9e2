"""Copies of withdrawn samples outside the store: batch folders (an inbox, a staging area) whose
VCF files or VCZs still hold a sample whose consent was withdrawn.

A withdrawal removes the samples from the store and its history; a batch still waiting in an
inbox (refused, say) or staged for an append would keep them. :func:`find_leftovers` names such
batches with counts only, and :func:`delete_leftovers` deletes them.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import itertools
import posixpath
import struct
from typing import BinaryIO

from vczstore_dagster.store.ledger import read_ledger

VCF_SUFFIXES = (".vcf", ".vcf.gz", ".vcf.bgz", ".bcf")


@dataclasses.dataclass
class Leftover:
    name: str  # the folder directly under the searched root: a batch
    path: str  # that folder (a local path, or bucket/prefix on S3)
    withdrawn: int  # withdrawn samples its VCF files and VCZs hold
    files: int  # how many of its VCF files and VCZs hold one


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


def _filesystem(root: str, storage_options: dict | None):
    import fsspec

    return fsspec.core.url_to_fs(root, **(storage_options or {}))


def _is_local(fs) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols


def _vcz_ids(fs, path: str, storage_options: dict | None) -> list[str]:
    import zarr

    from vczstore_dagster.store import schema

    if _is_local(fs):
        group = zarr.open_group(path, mode="r")
    else:
        group = zarr.open_group(fs.unstrip_protocol(path), mode="r",
                                storage_options=storage_options)
    return [str(s) for s in schema.strings(group["sample_id"][...])]


def _held_ids(fs, folder: str, storage_options: dict | None):
    """(VCF file or VCZ, its sample IDs) for everything in ``folder``, recursively."""
    for directory, subdirs, files in fs.walk(folder):
        for name in sorted(subdirs):
            if name.endswith(".vcz"):
                path = posixpath.join(directory, name)
                yield path, _vcz_ids(fs, path, storage_options)
        subdirs[:] = [d for d in subdirs if not d.endswith(".vcz")]
        for name in sorted(files):
            if name.endswith(VCF_SUFFIXES):
                path = posixpath.join(directory, name)
                with fs.open(path, "rb") as f:
                    yield path, vcf_sample_ids(f)


def find_leftovers(store, root: str, *, storage_options: dict | None = None) -> list[Leftover]:
    """The folders directly under ``root`` (a local folder or ``s3://`` prefix) whose VCF files or
    VCZs hold a sample withdrawn from ``store``; a missing ``root`` holds none."""
    ledger = read_ledger(store.readonly_group())
    withdrawn = set(ledger.withdrawn)
    if not withdrawn:
        return []
    fs, base = _filesystem(root, storage_options)
    if not fs.exists(base):
        return []
    out = []
    for entry in fs.ls(base, detail=True):
        folder = entry["name"].rstrip("/")
        if entry["type"] != "directory" or folder == base.rstrip("/"):
            continue
        held, files = set(), 0
        for _, ids in _held_ids(fs, folder, storage_options):
            hits = {s for s in ids if s and ledger.hash_sample(s) in withdrawn}
            held |= hits
            files += bool(hits)
        if held:
            out.append(Leftover(posixpath.basename(folder), folder, len(held), files))
    return out


def delete_leftovers(leftovers: list[Leftover], root: str, *,
                     storage_options: dict | None = None) -> None:
    """Delete the folders :func:`find_leftovers` found under ``root``."""
    fs, _ = _filesystem(root, storage_options)
    for leftover in leftovers:
        fs.rm(leftover.path, recursive=True)
