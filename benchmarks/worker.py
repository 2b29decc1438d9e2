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


def op_convert_steps(vcf, out, like, partitions, parallel):
    """``convert --like`` split into ``partitions``, every step (begin, each explode partition,
    plan, each encode partition, finish) in a fresh process, at most ``parallel`` at once: what a
    Dagster executor that gives each step a process runs, less Dagster's own cost per step."""
    import shutil
    import subprocess
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from benchmarks.measure import worker

    work = pathlib.Path(tempfile.mkdtemp(prefix="convert-steps-", dir=pathlib.Path(out).parent))
    process_seconds = []

    def step(name, **kwargs):
        """(info, seconds of the step's work after its imports)"""
        t0 = time.perf_counter()
        proc = subprocess.run(worker("convert_step", step=name, work=work, **kwargs),
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"step {name} failed:\n{proc.stderr[-2000:]}")
        process_seconds.append(time.perf_counter() - t0)
        line = next(x for x in proc.stdout.splitlines() if x.startswith(RESULT_PREFIX))
        result = json.loads(line[len(RESULT_PREFIX):])
        return result["info"], result["seconds"]

    def fan_out(name, count):
        with ThreadPoolExecutor(parallel) as pool:
            return [s for _, s in pool.map(lambda j: step(name, partition=j), range(count))]

    try:
        begun, t_begin = step("begin", vcf=vcf, partitions=partitions)
        t_explode = fan_out("explode", begun["explode_partitions"])
        plan, t_plan = step("plan", like=like)
        t_encode = fan_out("encode", plan["partitions"])
        _, t_finish = step("finish", out=out, like=like)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    work_seconds = [t_begin, *t_explode, t_plan, *t_encode, t_finish]
    return {"partitions": plan["partitions"], "explode_partitions": begun["explode_partitions"],
            "steps": len(work_seconds), "memory_per_partition_mb": round(plan["memory"] / 2**20, 1),
            "steps_work_s": round(sum(work_seconds), 2),  # the steps' work, after their imports
            # the steps' work along the longest path: the time with a machine per step, were
            # process starts and imports free
            "critical_path_s": round(t_begin + max(t_explode) + t_plan + max(t_encode) + t_finish, 2),
            "steps_process_s": round(sum(process_seconds), 2)}  # ... with starts and imports


def op_convert_step(step, work, vcf=None, partitions=None, partition=None, like=None, out=None):
    engine = _engine()
    from vczstore_dagster.store import convert

    if step == "begin":
        return {"explode_partitions": convert.begin([vcf], work, partitions=partitions).num_partitions}
    if step == "explode":
        convert.explode_partition(work, partition)
    elif step == "plan":
        plan = convert.plan_encoding(work, engine.open_store(like))
        return {"partitions": plan.num_partitions, "memory": plan.max_encoding_memory}
    elif step == "encode":
        convert.encode_partition(work, partition)
    else:
        convert.finish(work, out, engine.open_store(like))
    return {}


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
    """The floor of re-encoding a batch on the store's grid: decode each of the batch's chunks
    once (its files memory-mapped) and encode the store's chunks with the store's codecs (``like``
    is a batch in the store's layout) from sample ``offset`` of the grid on (a store whose last
    column is partial), at ``level`` ("fast": the engine's fast level), written as plain files
    under ``out``; no zarr, no Icechunk. A task per array and variant chunk, on every core."""
    import numpy as np
    import zarr

    from vczstore_dagster.store import schema
    from vczstore_dagster.store.chunkcodec import chunk_codec, read_chunk

    source = zarr.open_group(src, mode="r")
    template = zarr.open_group(like, mode="r")
    out = pathlib.Path(out)
    tasks = []
    for name, array in schema.sample_arrays(template).items():
        (out / name).mkdir(parents=True)
        if schema.sample_axis(array) == 0:  # sample_id: strings, through zarr
            (out / name / "all").write_text("\n".join(schema.strings(source[name][...])))
            continue
        tasks += [(name, array, v0) for v0 in range(0, array.shape[0], array.chunks[0])]

    def row(task):
        name, array, v0 = task
        src_array = source[name]
        decode, encode = chunk_codec(src_array), chunk_codec(_at_level(array, level))
        s, sv, n = array.chunks[1], src_array.chunks[1], src_array.shape[1]
        rows = min(array.shape[0], v0 + array.chunks[0]) - v0
        held = np.empty(src_array.chunks, dtype=src_array.dtype)
        column = np.zeros(array.chunks, dtype=array.dtype)
        held_k, written = None, 0
        for c in range(offset // s, -(-(offset + n) // s)):
            lo, hi = max(c * s, offset), min((c + 1) * s, offset + n)  # store samples
            x = lo - offset
            while x < hi - offset:  # batch samples, chunk by chunk
                k = x // sv
                y = min(hi - offset, (k + 1) * sv)
                if k != held_k:  # the chunk file memory-mapped, decoded into ``held``
                    read_chunk(src_array, decode, (v0 // array.chunks[0], k,
                                                   *[0] * (array.ndim - 2)), held)
                    held_k = k
                column[:rows, x + offset - c * s : y + offset - c * s] = held[:rows, x - k * sv : y - k * sv]
                x = y
            data = column.reshape(-1).view(np.uint8)
            (out / name / f"{v0}.{c}").write_bytes(encode.encode(data))
            written += 1
        return written

    return {"chunks": sum(_on_every_core(row, tasks))}


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
