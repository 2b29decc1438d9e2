"""Laying a batch out on the store's sample grid: ``offset`` empty leading sample slots, so that
the batch's sample chunk columns line up with the store's (only the store's partial column is then
re-encoded by the append; every other column is copied as encoded bytes)."""

from __future__ import annotations

import pathlib
import shutil
import warnings

from vczstore_dagster.store import schema
from vczstore_dagster.store.batch import OFFSET_ATTR
from vczstore_dagster.store.blocks import column_blocks, run_blocks, trailing_chunks


def consolidate(path) -> None:
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "consolidated metadata is not part of the v3 spec"
        zarr.consolidate_metadata(str(path))


def lay_out_with_offset(src_path, dst_path, offset: int) -> None:
    """Copy a VCZ, inserting ``offset`` empty sample slots first so its chunk columns line up."""
    import zarr

    src = zarr.open_group(str(src_path), mode="r")
    dst = zarr.open_group(str(dst_path), mode="w", zarr_format=src.metadata.zarr_format)
    dst.attrs.update({**dict(src.attrs), OFFSET_ATTR: offset})
    blocks = []
    for name, array in src.arrays():
        axis = schema.sample_axis(array)
        if axis is None:
            shutil.copytree(pathlib.Path(src_path) / name, pathlib.Path(dst_path) / name)
            continue
        shape = list(array.shape)
        shape[axis] += offset
        target = schema.create_like(dst, name, array, shape=shape)
        blocks += _offset_blocks(array, target, axis, offset)
    run_blocks(blocks)
    consolidate(dst_path)


def _offset_blocks(src, dst, axis, offset) -> list:
    """Blocks writing every chunk of ``dst`` once: its samples ``j`` are ``src``'s ``j - offset``."""
    s = dst.chunks[axis]
    blocks = []
    for start in range(offset - offset % s, dst.shape[axis], s):
        lo, hi = max(start, offset), min(start + s, dst.shape[axis])
        from_samples = slice(lo - offset, hi - offset)

        def rewrite(samples, variants, from_samples=from_samples):
            if variants is None:
                dst[samples] = src[from_samples]
                return 1
            dst[variants, samples] = src[variants, from_samples]
            return trailing_chunks(dst)

        blocks += column_blocks(dst, axis, lo, hi, rewrite)
    return blocks
