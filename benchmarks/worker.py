"""``python -m benchmarks.worker OP JSON``: run one operation and print its own timing.

The heavy modules are imported before the clock starts, so ``seconds`` is the operation alone
(opening the store included); the harness also records the whole process's wall time and peak RSS.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time

from benchmarks.measure import RESULT_PREFIX


def _engine():
    import icechunk  # noqa: F401
    import numpy  # noqa: F401
    import zarr  # noqa: F401

    import vczstore_dagster.store as engine
    import vczstore_dagster.store.purge  # noqa: F401
    import vczstore_dagster.store.remove  # noqa: F401

    return engine


# ---------------------------------------------------------------------------------- engine ops
def op_init(store, batch):
    r = _engine().init_store(store, from_vcz=batch)
    return {"samples": r.num_samples}


def op_convert(vcf, out, like):
    engine = _engine()
    r = engine.convert_vcfs([vcf], out, like=engine.open_store(like))
    return {"samples": r.num_samples, "offset": r.sample_offset}


def op_append(store, batch, storage_options=None, dask_scheduler=None):
    engine = _engine()
    r = engine.append_batch(engine.open_store(store, storage_options=storage_options), batch,
                            dask_scheduler=dask_scheduler)
    return {"fast_path": r.fast_path, "chunks_copied": r.chunks_copied,
            "chunks_reencoded": r.chunks_reencoded, "bytes_copied": r.bytes_copied,
            "samples_after": r.samples_after, **_cluster_info(r.cluster)}


def op_remove(store, samples, dask_scheduler=None):
    engine = _engine()
    from vczstore_dagster.store.remove import remove_samples

    r = remove_samples(engine.open_store(store), samples, dask_scheduler=dask_scheduler)
    return {"columns": r.columns_rewritten, "chunks": r.chunks_rewritten,
            **_cluster_info(r.cluster)}


def _cluster_info(work) -> dict:
    return {} if work is None else {"dask_tasks": work.tasks, "dask_workers_used": work.workers_used}


def op_purge(store):
    engine = _engine()
    from vczstore_dagster.store import purge as module

    redacting = []  # seconds spent redacting releases, timed around the engine's own step
    redact = getattr(module, "_redact_if_needed", None)
    if redact is not None:
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return redact(*args, **kwargs)
            finally:
                redacting.append(time.perf_counter() - t0)

        module._redact_if_needed = timed
    r = module.purge(engine.open_store(store))
    return {"redacted": len(r.redacted), "snapshots_expired": r.snapshots_expired,
            "chunks_deleted": r.chunks_deleted, "bytes_deleted": r.bytes_deleted,
            **({"redact_seconds": sum(redacting)} if redacting else {})}


def op_tag(store, name):
    engine = _engine()
    r = engine.tag_release(engine.open_store(store), name)
    return {"active_samples": r.active_samples}


def op_info(store):
    engine = _engine()
    r = engine.store_info(engine.open_store(store))
    return {"samples": r.num_samples, "bytes": r.bytes}


def op_init_s3(store, batch, storage_options):
    r = _engine().init_store(store, from_vcz=batch, storage_options=storage_options)
    return {"samples": r.num_samples}


# ---------------------------------------------------------------------------------- baselines
def op_convert_baseline(vcf, out, variants_chunk, samples_chunk):
    """Plain bio2zarr: explode + encode of the same VCF, one process, Zarr format 3."""
    from bio2zarr import vcf as b2z

    b2z.convert([vcf], out, variants_chunk_size=variants_chunk, samples_chunk_size=samples_chunk,
                worker_processes=0, zarr_format=3)
    return {}


def _on_every_core(fn, items, workers=None):
    """``fn`` over ``items`` with one thread per core (codecs release the GIL), as the engine's
    block rewrites run: a baseline on one core would flatter the engine (``workers=1``: a
    single-core baseline, where the target says so)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers or len(os.sched_getaffinity(0))) as pool:
        return list(pool.map(fn, items))


def _at_level(array, level):
    """``array`` writing at ``level``: None keeps its own, "fast" the engine's fast level."""
    if level is None:
        return array
    from vczstore_dagster.store.recompress import fast_level

    assert level == "fast", level
    return fast_level(array)


def op_reencode_baseline(batches, columns, out, workers=None):
    """Decode and re-encode the touched chunks with the same codecs: every sample array's blocks
    in the given sample-chunk columns, read from the batch VCZs (the bytes the store holds) and
    written to a scratch Zarr with the same metadata. ``batches`` and ``columns`` are parallel
    lists: columns of each batch to touch. ``workers``: threads (default one per core)."""
    import numpy as np
    import zarr

    from vczstore_dagster.store import schema

    out = pathlib.Path(out)
    chunks = 0
    for k, (batch, cols) in enumerate(zip(batches, columns, strict=True)):
        src = zarr.open_group(batch, mode="r")
        dst = zarr.open_group(str(out / f"b{k}"), mode="w", zarr_format=3)
        for name, array in schema.sample_arrays(src).items():
            axis = schema.sample_axis(array)
            target = schema.create_like(dst, name, array)
            value = schema.missing_value(array) if name.startswith("call_") else ""
            if name in ("call_genotype_mask",):
                value = True
            s = array.chunks[axis]
            for c in cols:
                lo, hi = c * s, min((c + 1) * s, array.shape[axis])
                if axis == 0:
                    block = np.asarray(array[lo:hi])
                    block[0] = value
                    target[lo:hi] = block
                    chunks += 1
                    continue

                def blank(v0, array=array, target=target, value=value, lo=lo, hi=hi):
                    v1 = min(array.shape[0], v0 + array.chunks[0])
                    block = np.asarray(array[v0:v1, lo:hi])
                    block[:, 0] = value
                    target[v0:v1, lo:hi] = block
                    return 1

                chunks += sum(_on_every_core(blank, range(0, array.shape[0], array.chunks[0]),
                                             workers))
    return {"chunks": chunks}


def op_regrid_baseline(src, like, out, offset=0, level=None):
    """Decode a batch on another grid or codec and encode it on the store's grid with the store's
    codecs (``like`` is a batch in the store's layout), from sample ``offset`` of the grid on (a
    store whose last column is partial), at ``level`` ("fast": the engine's fast level). Each
    source chunk is decoded once: a task per array and variant chunk, on every core."""
    import numpy as np
    import zarr

    from vczstore_dagster.store import schema

    source = zarr.open_group(src, mode="r")
    template = zarr.open_group(like, mode="r")
    dst = zarr.open_group(out, mode="w", zarr_format=3)
    rows = 0
    for name, array in schema.sample_arrays(template).items():
        axis = schema.sample_axis(array)
        n = source[name].shape[axis]
        shape = list(array.shape)
        shape[axis] = offset + n
        target = _at_level(schema.create_like(dst, name, array, shape=tuple(shape)), level)
        if axis == 0:
            target[offset:] = np.asarray(source[name][...])
            rows += 1
            continue

        def regrid(v0, target=target, name=name):
            v1 = min(target.shape[0], v0 + target.chunks[0])
            target[v0:v1, offset:] = np.asarray(source[name][v0:v1])
            return 1

        rows += sum(_on_every_core(regrid, range(0, array.shape[0], array.chunks[0])))
    return {"rows": rows}


def op_decode_genotypes(batches):
    """Read (decode) every call_genotype chunk of the batches: what recomputing statistics needs."""
    import numpy as np
    import zarr

    total = 0
    for batch in batches:
        gt = zarr.open_group(batch, mode="r")["call_genotype"]
        for v0 in range(0, gt.shape[0], gt.chunks[0]):
            block = np.asarray(gt[v0 : v0 + gt.chunks[0]])
            total += int(np.count_nonzero(block == 1))
    return {"alt_alleles": total}


def op_open_read_ids(store):
    """Open the repository and read the sample ids and root attributes: what any `info` must do."""
    import icechunk
    import zarr

    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(store))
    group = zarr.open_group(repo.readonly_session(branch="main").store, mode="r")
    ids = group["sample_id"][...]
    return {"samples": len(ids), "attrs": len(dict(group.attrs))}


def op_s3_put(src, url, storage_options):
    """Upload the batch directory's files with s3fs (concurrent puts)."""
    import s3fs

    from vczstore_dagster.store.location import s3fs_kwargs

    fs = s3fs.S3FileSystem(**s3fs_kwargs(storage_options))
    fs.put(src.rstrip("/") + "/", url.removeprefix("s3://").rstrip("/") + "/", recursive=True)
    return {}


def main() -> None:
    op, kwargs = sys.argv[1], json.loads(sys.argv[2])
    fn = globals()[f"op_{op}"]
    if not op.endswith(("baseline", "genotypes", "ids", "put")):
        _engine()  # imports before the clock starts
    else:
        import numpy  # noqa: F401
        import zarr  # noqa: F401
        if op == "s3_put":
            import s3fs  # noqa: F401
    t0 = time.perf_counter()
    info = fn(**kwargs)
    seconds = time.perf_counter() - t0
    print(RESULT_PREFIX + json.dumps({"seconds": seconds, "info": info}), flush=True)


if __name__ == "__main__":
    main()
