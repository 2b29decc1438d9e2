"""Create a store: from a VCZ whose samples become the first batch, or from a variants-only source."""

from __future__ import annotations

import dataclasses
import pathlib
import tempfile

from vczstore_dagster.store import schema
from vczstore_dagster.store.batch import check_batch_id, open_batch
from vczstore_dagster.store.blocks import reencode_blocks, trailing_chunks
from vczstore_dagster.store.chunkcopy import column_copies
from vczstore_dagster.store.cluster import Cluster, ClusterWork, connect, run_work
from vczstore_dagster.store.errors import InvalidInputError
from vczstore_dagster.store.ledger import BatchRecord, Ledger, now, write_ledger
from vczstore_dagster.store.location import (
    BACKENDS,
    Location,
    detect_backend,
    repository_config,
    storage_error,
)

DEFAULT_SAMPLES_CHUNK = 1000


@dataclasses.dataclass
class InitResult:
    url: str
    backend: str
    num_variants: int
    num_samples: int
    snapshot_id: str | None
    batch_id: str | None
    cluster: ClusterWork | None = None  # what ran on a Dask cluster


def init_store(url, *, from_vcz=None, variants=None, storage_options=None, backend: str = "icechunk",
               zarr_format: int = 3, samples_chunk_size: int | None = None, batch_id: str | None = None,
               float_compression: str | None = None, progress: bool = False,
               dask_scheduler: str | Cluster | None = None) -> InitResult:
    """Create a new store at ``url`` (it must not exist yet). ``float_compression``
    (``CNAME:LEVEL[:SHUFFLE]``, blosc) re-encodes the float ``call_*`` fields instead of keeping
    the source's codec; batches converted ``--like`` the store follow it. ``dask_scheduler``: copy
    and re-encode the chunks on that Dask cluster (an address, or ``local``)."""
    float_codec = parse_float_compression(float_compression) if float_compression is not None else None
    if (from_vcz is None) == (not variants):
        raise InvalidInputError("init needs exactly one of --from VCZ or --variants SOURCE")
    if backend not in BACKENDS:
        raise InvalidInputError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "icechunk" and zarr_format != 3:
        raise InvalidInputError("Icechunk stores are Zarr format 3")
    location = Location.parse(url, storage_options)
    if detect_backend(location) is not None or (
        location.is_local and pathlib.Path(location.path).exists() and any(pathlib.Path(location.path).iterdir())
    ):
        raise InvalidInputError(f"{url}: a store (or other files) already exists there")

    with tempfile.TemporaryDirectory(prefix="vczstore-init-") as tmp:
        if from_vcz is not None:
            source = open_batch(from_vcz)
            if source.sample_offset:
                raise InvalidInputError(f"{from_vcz}: a batch laid out for another store cannot start one")
            batch_id = check_batch_id(batch_id or source.name.removesuffix(".vcz"))
            _refuse_bad_first_batch(source)
            group = source.group
            n = source.num_samples
        else:
            group = _variants_only(variants, pathlib.Path(tmp), samples_chunk_size)
            batch_id, n = None, 0
        if samples_chunk_size and from_vcz is not None and samples_chunk_size != group["sample_id"].chunks[0]:
            raise InvalidInputError(
                f"{from_vcz}: its sample chunk size is {group['sample_id'].chunks[0]}; convert it with "
                f"{samples_chunk_size} or leave --samples-chunk-size out"
            )
        ledger = Ledger.new()
        if batch_id is not None:
            ledger.batches.append(BatchRecord(batch_id, 0, n, now(), None))
        with connect(dask_scheduler) as cluster:
            snapshot = _write_new_store(location, backend, zarr_format, group, ledger, progress,
                                        float_codec=float_codec, message=f"init: {n} samples, {schema.num_variants(group)} variants"
                                        + (f" (batch {batch_id})" if batch_id else ""),
                                        batch_id=batch_id, cluster=cluster)
            ran = cluster.take_work() if cluster is not None else None
        num_variants = schema.num_variants(group)
    return InitResult(url, backend, num_variants, n, snapshot, batch_id, ran)


def _refuse_bad_first_batch(batch) -> None:
    """The checks a batch that starts a store can have: its samples and its chunks."""
    from vczstore_dagster.store.compatibility import check_new_batch

    report = check_new_batch(batch)
    if not report.ok:
        hint = " (a store without samples starts with --variants)" if not batch.num_samples else ""
        raise InvalidInputError("; ".join(f.message for f in report.errors) + hint)


def _variants_only(sources, tmp: pathlib.Path, samples_chunk_size):
    """A zero-sample VCZ from the first source (a VCZ, or a VCF converted here)."""
    import zarr

    if len(sources) > 1:  # the union of their variant sets, as bcftools merge -m none gives it
        from vczstore_dagster.store.union import union_of_variants

        sources = [union_of_variants(sources, tmp)]
    source = pathlib.Path(sources[0])
    if source.is_dir():
        vcz = open_batch(source).group
    else:
        from vczstore_dagster.store.convert import convert_vcfs

        out = tmp / "variants.vcz"
        convert_vcfs([source], out, samples_chunk_size=samples_chunk_size or DEFAULT_SAMPLES_CHUNK)
        vcz = zarr.open_group(str(out), mode="r")
        if schema.num_samples(vcz) == 0:
            return vcz
    return _zero_samples(vcz, tmp, samples_chunk_size)


def _zero_samples(vcz, tmp, samples_chunk_size):
    """Copy the variant arrays and give every sample array a samples dimension of 0."""
    import zarr

    out = zarr.open_group(str(tmp / "zero.vcz"), mode="w", zarr_format=vcz.metadata.zarr_format)
    out.attrs.update(dict(vcz.attrs))
    for name, array in vcz.arrays():
        axis = schema.sample_axis(array)
        shape = list(array.shape)
        chunks = list(array.chunks)
        if axis is not None:
            shape[axis] = 0
            chunks[axis] = samples_chunk_size or chunks[axis]
        new = schema.create_like(out, name, array, shape=shape, chunks=chunks)
        if axis is None:
            _copy_values(array, new)
    return out


def _copy_values(src, dst) -> None:
    if src.ndim == 0 or src.shape[0] == 0:
        return
    step = src.chunks[0] * 16
    for i in range(0, src.shape[0], step):
        dst[i : i + step] = src[i : i + step]


def _write_new_store(location, backend, zarr_format, source, ledger, progress, message, batch_id,
                     float_codec=None, cluster=None):
    import icechunk
    import zarr

    if backend == "icechunk":
        with location.write_lock("init"):  # creating the repository writes its refs too
            try:
                repo = icechunk.Repository.create(location.icechunk_storage(),
                                                  config=repository_config())
            except icechunk.IcechunkError as exc:
                raise storage_error(location, exc) from exc
            session = repo.writable_session("main")
            root = zarr.open_group(session.store, mode="w", zarr_format=3)
            copy_group(source, root, progress=progress, float_codec=float_codec, cluster=cluster)
            write_ledger(root, ledger)
            meta = {"operation": "init", "num_samples": ledger.batches[0].num_samples if ledger.batches else 0}
            if batch_id:
                meta["batch_id"] = batch_id
            snapshot = session.commit(message, metadata=meta)
            repo.save_config()
        return snapshot
    zstore = location.zarr_store(read_only=False)
    root = zarr.open_group(zstore, mode="w", zarr_format=zarr_format)
    copy_group(source, root, progress=progress, float_codec=float_codec, cluster=cluster)
    write_ledger(root, ledger)
    zarr.consolidate_metadata(zstore)
    return None


def copy_group(src, dst, *, progress: bool = False, float_codec: FloatCodec | None = None,
               cluster: Cluster | None = None) -> None:
    """Copy a VCZ group: encoded bytes where the encodings agree, else re-encoded block by block
    (float ``call_*`` fields too, when ``float_codec`` is given); on ``cluster`` when given."""
    dst.attrs.update(dict(src.attrs))
    same_format = src.metadata.zarr_format == dst.metadata.zarr_format
    blocks, copies = [], []
    for name, array in src.arrays():
        if name == "region_index" and not same_format:
            continue
        recode = float_codec is not None and name.startswith("call_") and array.dtype.kind == "f"
        compressors = float_codec.compressor(array, dst.metadata.zarr_format) if recode else None
        new = _create_like_converted(dst, name, array, compressors=compressors)
        if array.size == 0:
            continue
        if same_format and not recode:
            copies += column_copies(new, array, 0, range(-(-array.shape[0] // array.chunks[0])), 0)
        elif schema.sample_axis(array) == 1:
            blocks += reencode_blocks(array, new)
        else:  # small variant arrays, a few chunks at a time
            _copy_values(array, new)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(copies) + sum(trailing_chunks(b.target) for b in blocks),
                   unit="chunk", desc="init")
    try:
        run_work(blocks, copies, cluster=cluster, on_done=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()


@dataclasses.dataclass(frozen=True)
class FloatCodec:
    """A blosc compressor for float FORMAT fields (``zstd:1``, ``zstd:3:bitshuffle``...)."""

    cname: str
    clevel: int
    shuffle: str = "shuffle"

    def compressor(self, array, zarr_format: int):
        if zarr_format == 3:
            from zarr.codecs import BloscCodec

            return BloscCodec(cname=self.cname, clevel=self.clevel, shuffle=self.shuffle,
                              typesize=array.dtype.itemsize)
        from numcodecs import Blosc

        return Blosc(cname=self.cname, clevel=self.clevel, shuffle=SHUFFLES.index(self.shuffle))


BLOSC_CNAMES = ("zstd", "lz4", "lz4hc", "blosclz", "zlib")
SHUFFLES = ("noshuffle", "shuffle", "bitshuffle")  # in numcodecs' order (0, 1, 2)


def parse_float_compression(spec: str) -> FloatCodec:
    parts = spec.strip().split(":")
    ok = (2 <= len(parts) <= 3 and parts[0] in BLOSC_CNAMES and parts[1].isdigit()
          and 0 <= int(parts[1]) <= 9 and (len(parts) == 2 or parts[2] in SHUFFLES))
    if not ok:
        raise InvalidInputError(
            f"float compression {spec!r}: expected CNAME:LEVEL[:SHUFFLE] with CNAME one of "
            f"{', '.join(BLOSC_CNAMES)}, LEVEL 0-9 and SHUFFLE one of {', '.join(SHUFFLES)} "
            "(for example zstd:1 or zstd:3:bitshuffle)")
    return FloatCodec(parts[0], int(parts[1]), *parts[2:])


def _create_like_converted(group, name, array, *, compressors=None):
    """An array like ``array`` in the group's Zarr format (v2 encodings translated to v3), with
    ``compressors`` instead of its own when given."""
    meta = array.metadata
    fill = meta.fill_value
    if fill is None:
        fill = schema.default_fill(array)
    kwargs = dict(name=name, shape=array.shape, chunks=array.chunks, dtype=array.dtype,
                  fill_value=fill, attributes={k: v for k, v in array.attrs.items()
                                                if k != "_ARRAY_DIMENSIONS"},
                  compressors=compressors if compressors is not None else array.compressors)
    if group.metadata.zarr_format == 3:
        kwargs["dimension_names"] = schema.dims(array) or None
        if meta.zarr_format == 3:
            kwargs.update(serializer=array.serializer, filters=array.filters)
    else:
        kwargs["attributes"]["_ARRAY_DIMENSIONS"] = list(schema.dims(array))
        kwargs["filters"] = array.filters
    return group.create_array(**kwargs)
