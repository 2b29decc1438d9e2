"""Chunks a batch cannot be read from, found before anything is written.

An append copies most of a batch's chunks as encoded bytes, and Icechunk keeps every chunk
written by a session that then fails (orphans, until a garbage collection): a damaged chunk must
be found before the store is touched. Blosc (what bio2zarr writes) keeps the compressed and
decompressed sizes in a 16-byte header: a chunk whose file is shorter or longer than its header
says, or whose decompressed size is not its chunk's, is damaged; that costs a file size and 16
bytes per chunk. A chunk under any other codec is decoded in full.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import pathlib
import struct

import numpy as np

BLOSC_HEADER = 16


@dataclasses.dataclass(frozen=True)
class DamagedChunk:
    array: str
    key: str
    why: str


def damaged_chunks(path, group, names) -> list[DamagedChunk]:
    """The damaged chunks of arrays ``names`` of the local VCZ at ``path`` (opened as ``group``)."""
    out = []
    for name in names:
        array = group[name]
        blosc, fixed = _layout(array)
        expected = math.prod(array.chunks) * np.dtype(array.dtype).itemsize if fixed else None
        grid = [range(math.ceil(s / c)) for s, c in zip(array.shape, array.chunks, strict=True)]
        for coords in itertools.product(*grid):
            key = array.metadata.encode_chunk_key(coords)
            file = pathlib.Path(path) / name / key
            if not file.is_file():
                continue  # never written: readers see the fill value
            why = _blosc_problem(file, expected) if blosc else _decode_problem(array, coords)
            if why:
                out.append(DamagedChunk(name, key, why))
    return out


def _layout(array) -> tuple[bool, bool]:
    """(the outermost codec is blosc, chunks decode to a fixed number of bytes)."""
    meta = array.metadata
    if meta.zarr_format == 3:
        names = [c.to_dict()["name"] for c in meta.codecs]
        blosc = bool(names) and names[-1] == "blosc"
        fixed = len(names) == 2 and names[0] == "bytes"
    else:
        blosc = meta.compressor is not None and meta.compressor.codec_id == "blosc"
        fixed = not meta.filters
    kind = getattr(array.dtype, "kind", "")
    return blosc, fixed and kind in "biuf"


def _blosc_problem(file: pathlib.Path, expected: int | None) -> str | None:
    size = file.stat().st_size
    if size < BLOSC_HEADER:
        return f"{size} bytes, shorter than a blosc header"
    with open(file, "rb") as f:
        header = f.read(BLOSC_HEADER)
    nbytes, _, cbytes = struct.unpack("<III", header[4:16])
    if cbytes != size:
        return f"its blosc header says {cbytes} bytes, the file holds {size}"
    if expected is not None and nbytes != expected:
        return f"its blosc header says it decodes to {nbytes} bytes, its chunk holds {expected}"
    return None


def _decode_problem(array, coords) -> str | None:
    try:
        array.get_block_selection(tuple(coords))
    except Exception as exc:  # noqa: BLE001 - whatever the codec raises, the chunk is unreadable
        return f"{type(exc).__name__}: {exc}"
    return None


def describe(batch_name: str, damaged: list[DamagedChunk]) -> str:
    first = damaged[0]
    more = f" ({len(damaged)} damaged chunks in all)" if len(damaged) > 1 else ""
    return (f"batch {batch_name}: chunk {first.key} of array {first.array} cannot be read "
            f"({first.why}){more}; copy or convert the batch again")
