"""Fixtures shared by the whole suite.

- ``moto_s3`` (session): a real ``moto_server`` on 127.0.0.1 with one bucket.
- ``vcf_batch`` (session factory): bgzipped + indexed VCFs from ``vczstore_dagster.testdata``;
  batches made with the same ``sites_seed`` share the variant set.
- ``make_store`` (function factory): a store built with the engine (``init`` from a batch of VCFs)
  on local Icechunk, S3 Icechunk or plain Zarr 2/3.
- ``dask_cluster`` (session): a real Dask ``LocalCluster`` of 2 worker processes on 127.0.0.1.

Ground truth, digests and subprocess helpers live in :mod:`vczstore_dagster_tests.helpers`.
"""

from __future__ import annotations

import hashlib
import pathlib
import uuid

import pytest

from vczstore_dagster_tests import helpers


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory):
    """A real S3 endpoint (``moto_server``) on a free loopback port, with one bucket."""
    log_dir = tmp_path_factory.mktemp("moto")
    server = helpers.start_moto_server(log_dir / "moto_server.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vcf_batch(tmp_path_factory):
    """Factory: ``vcf_batch(prefix="S", num_samples=10, *, start=0, num_variants=100, sites_seed=42,
    seed=None, samples=None, edit=None, **testdata_kwargs) -> Path`` of a ``.vcf.gz`` (+ ``.csi``).

    Same arguments → the same file (cached for the session; never modify it). ``seed`` defaults to
    one derived from the sample names, so different batches get different genotypes. ``edit`` is a
    ``text -> text`` function applied to the plain VCF before compressing (for bad batches).
    """
    root = tmp_path_factory.mktemp("vcf_batches")
    cache: dict = {}

    def make(prefix: str = "S", num_samples: int = 10, *, start: int = 0,
             num_variants: int = 100, sites_seed: int = 42, seed: int | None = None,
             samples: list[str] | None = None, edit=None, **kwargs) -> pathlib.Path:
        from vczstore_dagster import testdata

        if samples is None:
            samples = testdata.sample_names(prefix, num_samples, start)
        samples = list(samples)
        if seed is None:
            seed = int.from_bytes(hashlib.sha256("\t".join(samples).encode()).digest()[:4], "big")
        key = (tuple(samples), num_variants, sites_seed, seed, tuple(sorted(kwargs.items())))
        if edit is None and key in cache:
            return cache[key]
        name = f"b{len(cache):03d}-{uuid.uuid4().hex[:6]}"
        path = helpers.make_vcf(root, name, samples, num_variants=num_variants,
                                sites_seed=sites_seed, seed=seed, edit=edit, **kwargs)
        if edit is None:
            cache[key] = path
        return path

    return make


@pytest.fixture(scope="session")
def vcz_cache_dir(tmp_path_factory):
    """Where first batches converted with plain bio2zarr are kept for the session."""
    return tmp_path_factory.mktemp("vcz_cache")


@pytest.fixture
def make_store(tmp_path, request, vcz_cache_dir):
    """Factory: ``make_store(kind, first_vcfs=None, *, samples_chunk_size=8,
    variants_chunk_size=None, variants=None, batch_id=None) -> (store, url)``.

    ``kind`` is one of icechunk | s3 | zarr2 | zarr3. The first batch is converted with plain
    bio2zarr and becomes the store's samples through the engine's ``init``; ``variants`` (paths)
    gives a zero-sample store instead.
    """

    def make(kind: str, first_vcfs=None, **kwargs):
        moto = request.getfixturevalue("moto_s3") if kind == "s3" else None
        kwargs.setdefault("cache_dir", vcz_cache_dir)
        return helpers.build_store(kind, first_vcfs, tmp_path, moto=moto, **kwargs)

    return make


@pytest.fixture(scope="session")
def dask_cluster():
    """A ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` on 127.0.0.1, as
    ``--dask-scheduler local`` starts it (no dashboard, no spilling): 5-20 s to start, so shared."""
    from vczstore_dagster.store.cluster import start_local_cluster

    cluster = start_local_cluster(n_workers=2, threads_per_worker=1)
    try:
        yield cluster
    finally:
        cluster.close()
