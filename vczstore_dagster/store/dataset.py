"""A release for Python users: its read-only Zarr group, or an ``xarray.Dataset`` of it without
the withdrawn samples.

    store = open_store("cohort")
    ds = release_dataset(store, "2026-11")        # xarray.Dataset, withdrawn samples dropped
    group = open_release(store, "2026-11")        # zarr.Group (read-only), every sample slot

A removed sample keeps its slot in the arrays (its ``sample_id`` is "", its calls are missing
values); a release made before a withdrawal still holds the sample until ``purge`` redacts it.
:func:`release_dataset` drops both; with the raw group use :func:`shown_samples`:
``ds.isel(samples=shown_samples(store, group))``.
"""

from __future__ import annotations

import numpy as np

from vczstore_dagster.store.view import visible_samples


def open_release(store, at: str | None = None):
    """The store at ``at`` (a release, branch or snapshot id; default the head of main) as a
    read-only ``zarr.Group``; ``xarray.open_zarr(group.store, consolidated=False)`` opens it."""
    return store.readonly_group(at)


def shown_samples(store, group) -> np.ndarray:
    """Indexes along the ``samples`` dimension of ``group`` (from :func:`open_release`) of the
    samples to show: not removed at that ref and not withdrawn since."""
    _, hidden, _ = visible_samples(store, group)
    return np.flatnonzero(~hidden)


def release_dataset(store, at: str | None = None, **open_kwargs):
    """The store at ``at`` as a lazy (Dask-backed) ``xarray.Dataset`` without the withdrawn
    samples. Needs xarray; ``open_kwargs`` go to ``xarray.open_zarr``."""
    import xarray as xr

    group = open_release(store, at)
    ds = xr.open_zarr(group.store, consolidated=False, **open_kwargs)
    return ds.isel(samples=shown_samples(store, group))
