"""What a VCF Zarr store looks like to the engine: dimensions, sample arrays, encodings, missing values."""

from __future__ import annotations

import dataclasses

import numpy as np

from vczstore_dagster.store import missing

SAMPLES_DIM = "samples"
VARIANTS_DIM = "variants"
# Arrays that describe variants and must be identical between a batch and the store.
VARIANT_IDENTITY = ("contig_id", "variant_contig", "variant_position", "variant_allele")
# Arrays the engine maintains itself or that readers recompute.
DERIVED = ("region_index",)
# The VCF header's Number of the field an array holds ("2", ".", "A", ...), as conversion read it.
VCF_NUMBER_ATTR = "vcf_number"


def dims(array) -> tuple[str, ...]:
    """Dimension names in either Zarr format."""
    names = getattr(array.metadata, "dimension_names", None)
    if names:
        return tuple(names)
    return tuple(array.attrs.get("_ARRAY_DIMENSIONS", ()))


def vcf_number(array) -> str | None:
    """The VCF Number recorded on an array (None: converted elsewhere, or not from a VCF field)."""
    value = array.attrs.get(VCF_NUMBER_ATTR)
    return None if value is None else str(value)


def sample_axis(array) -> int | None:
    d = dims(array)
    return d.index(SAMPLES_DIM) if SAMPLES_DIM in d else None


def sample_arrays(group) -> dict:
    """Every array with a samples dimension (``sample_id`` and the ``call_*`` arrays), by name."""
    out = {}
    for name, array in group.arrays():
        if name in DERIVED:
            continue
        if sample_axis(array) is not None:
            out[name] = array
    return dict(sorted(out.items()))


def call_fields(group) -> dict:
    return {n: a for n, a in sample_arrays(group).items() if n.startswith("call_")}


def num_samples(group) -> int:
    return int(group["sample_id"].shape[0])


def num_variants(group) -> int:
    return int(group["variant_position"].shape[0])


def samples_chunk_size(group) -> int:
    return int(group["sample_id"].chunks[0])


def variants_chunk_size(group) -> int:
    return int(group["variant_position"].chunks[0])


def encoding_signature(array) -> dict:
    """Everything about an array's encoding that must agree for encoded chunk bytes to be copied."""
    meta = array.metadata.to_dict()
    for key in ("shape", "attributes", "dimension_names", "storage_transformers"):
        meta.pop(key, None)
    if meta.get("zarr_format") == 2 and meta.get("fill_value") is None:
        meta["fill_value"] = default_fill(array)  # what a reader gives for a chunk never written
    return _canonical(meta)


def default_fill(array):
    """The value zarr reads for a chunk never written when a Zarr 2 array's fill value is None."""
    kind = getattr(array.dtype, "kind", "")
    if kind in ("T", "O", "U"):
        return ""
    if kind == "b":
        return False
    if kind == "f":
        return 0.0
    return 0


def _canonical(value):
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if hasattr(value, "get_config"):
        return _canonical(value.get_config())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and np.isnan(value):
        return "NaN"
    return value


def zarr_format(group) -> int:
    return int(group.metadata.zarr_format)


@dataclasses.dataclass(frozen=True)
class FieldShape:
    """An array's dtype and trailing shape (the dimensions after ``variants × samples``)."""

    dtype: str
    trailing: tuple[int, ...]
    trailing_dims: tuple[str, ...]

    @classmethod
    def of(cls, array) -> FieldShape:
        d = dims(array)
        axis = d.index(SAMPLES_DIM)
        return cls(str(array.dtype), tuple(array.shape[axis + 1 :]), tuple(d[axis + 1 :]))


def missing_value(array):
    """The VCF Zarr spec's *missing* value for an array's dtype (what a removed sample holds)."""
    return missing.codes(array.dtype)[0]


def fill_value_for(array):
    """The VCF Zarr spec's *fill* value (padding past the end of a variable-length field)."""
    return missing.codes(array.dtype)[1]


def dtype_bounds(dtype) -> tuple[float, float] | None:
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    if dtype.kind == "f":
        info = np.finfo(dtype)
        return float(info.min), float(info.max)
    return None


def strings(values) -> np.ndarray:
    """A string array (StringDType, object or fixed width) as numpy ``str``; None becomes ""."""
    a = np.asarray(values)
    if isinstance(a.dtype, np.dtypes.StringDType) and not hasattr(a.dtype, "na_object"):
        width = int(np.strings.str_len(a).max()) if a.size else 1  # no None: cast in one go
        return a.astype(f"<U{max(width, 1)}")
    a = np.asarray(values, dtype=object)
    if a.size:
        a = np.where(a == None, "", a)  # noqa: E711
    return a.astype(str)


def create_like(group, name, array, *, shape=None, chunks=None, dtype=None):
    """A new array in ``group`` with ``array``'s encoding, fill value and attributes (same Zarr
    format); ``shape``, ``chunks`` and ``dtype`` default to ``array``'s."""
    meta = array.metadata
    same_dtype = dtype is None or np.dtype(dtype) == np.dtype(array.dtype)
    compressors = array.compressors
    if not same_dtype:  # blosc shuffles by the item size it was given: a new dtype needs its own
        from zarr.codecs import BloscCodec

        size = np.dtype(dtype).itemsize
        compressors = tuple(dataclasses.replace(c, typesize=size) if isinstance(c, BloscCodec)
                            else c for c in compressors)
    kwargs = dict(name=name, shape=tuple(shape or array.shape), chunks=tuple(chunks or array.chunks),
                  dtype=dtype or array.dtype, fill_value=meta.fill_value,
                  attributes=dict(array.attrs), compressors=compressors, filters=array.filters)
    if meta.zarr_format == 3:
        kwargs["dimension_names"] = meta.dimension_names
        if same_dtype:
            kwargs["serializer"] = array.serializer  # a new dtype needs its own (endianness)
    return group.create_array(**kwargs)
