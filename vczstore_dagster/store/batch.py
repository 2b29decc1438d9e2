"""A batch on its way into the store: a VCZ directory, possibly laid out on the store's sample grid.

``convert --like STORE`` pads a batch with ``sample_offset`` empty leading sample slots so that its
sample chunks line up with the store's chunk columns (the store's partial last column is then the
only one that must be re-encoded). The offset is recorded in the batch's root attributes.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re

import numpy as np

from vczstore_dagster.store import schema
from vczstore_dagster.store.errors import InvalidInputError

OFFSET_ATTR = "vczstore_sample_offset"
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclasses.dataclass
class Batch:
    path: str
    group: object
    sample_offset: int

    @property
    def num_samples(self) -> int:
        return int(self.group["sample_id"].shape[0]) - self.sample_offset

    def sample_ids(self) -> np.ndarray:
        return schema.strings(self.group["sample_id"][self.sample_offset :])

    @property
    def name(self) -> str:
        return pathlib.Path(self.path.rstrip("/")).name


def open_batch(path) -> Batch:
    """Open a batch VCZ read-only; a clear error when it is not one."""
    import zarr

    p = pathlib.Path(path)
    if not p.exists():
        raise InvalidInputError(f"batch {path}: no such file or directory")
    if not p.is_dir():
        raise InvalidInputError(f"batch {path}: not a VCZ directory (convert VCF files first)")
    for meta in ("zarr.json", ".zgroup", ".zattrs"):
        f = p / meta
        if f.exists():
            try:
                json.loads(f.read_text())
            except (ValueError, UnicodeDecodeError) as exc:
                raise InvalidInputError(f"batch {path}: {meta} is corrupt ({exc})") from exc
    if not (p / "zarr.json").exists() and not (p / ".zgroup").exists():
        raise InvalidInputError(f"batch {path}: not a VCZ (no zarr.json or .zgroup at its root)")
    try:
        group = zarr.open_group(str(p), mode="r")
        required = ("sample_id", "variant_position", "variant_contig", "contig_id", "variant_allele")
        members = set(group.array_keys())
    except Exception as exc:
        raise InvalidInputError(f"batch {path}: cannot be read as Zarr ({exc})") from exc
    missing = [r for r in required if r not in members]
    if missing:
        raise InvalidInputError(f"batch {path}: not a VCZ (missing {', '.join(missing)})")
    for name in sorted(members):
        array_meta = [p / name / "zarr.json", p / name / ".zarray"]
        for f in array_meta:
            if f.exists():
                try:
                    json.loads(f.read_text())
                except (ValueError, UnicodeDecodeError) as exc:
                    raise InvalidInputError(f"batch {path}: {name}/{f.name} is corrupt ({exc})") from exc
    offset = int(group.attrs.get(OFFSET_ATTR, 0))
    return Batch(str(p), group, offset)


def check_batch_id(batch_id: str) -> str:
    if not SAFE_ID.match(batch_id or ""):
        raise InvalidInputError(
            f"batch id {batch_id!r} is not usable: use letters, digits, '.', '_' or '-' "
            "(at most 100 characters, starting with a letter or digit)"
        )
    return batch_id
