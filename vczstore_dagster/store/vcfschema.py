"""The schema a batch's VCFs are encoded with (bio2zarr's JSON schema, rewritten): the store's
dtypes, trailing dimensions, chunks and codecs, so that appending copies encoded chunks; or, for a
variants-only VCF, one with room for the FORMAT fields it has no values to size by."""

from __future__ import annotations

import json
import math

import numpy as np

from vczstore_dagster.store import schema
from vczstore_dagster.store.errors import InvalidInputError
from vczstore_dagster.store.planner import ALLELE_DIMS
from vczstore_dagster.store.widen import widen_hint

SITES_ONLY_VARIABLE_NUMBER = 4
SHUFFLE_IDS = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


def num_samples(icf_path) -> int:
    from bio2zarr import vcf as b2z

    return len(b2z.IntermediateColumnarFormat(str(icf_path)).metadata.samples)


def sites_only_schema(icf_path, variants_chunk_size, samples_chunk_size, ploidy: int = 2) -> dict:
    """A schema for a variants-only VCF: its FORMAT fields have no values to size dtypes and
    trailing dimensions by, so give them room (diploid, every allele of the widest site, int32,
    ``SITES_ONLY_VARIABLE_NUMBER`` values for ``Number=.``)."""
    from bio2zarr import vcf as b2z

    icf = b2z.IntermediateColumnarFormat(str(icf_path))
    spec = json.loads(icf.generate_schema(variants_chunk_size=variants_chunk_size,
                                          samples_chunk_size=samples_chunk_size).asjson())
    dims = spec["dimensions"]
    n_alleles = dims["alleles"]["size"]
    sizes = {"ploidy": ploidy, "genotypes": math.comb(n_alleles + ploidy - 1, ploidy)}
    for name, size in sizes.items():
        dims[name] = {"size": size, "chunk_size": size}
    for field in spec["fields"]:
        source = icf.fields.get(field.get("source") or "")
        if not field["name"].startswith("call_"):
            continue
        if source is not None and source.vcf_field.vcf_number == "." and len(field["dimensions"]) == 2:
            dim = f"FORMAT_{source.vcf_field.name}_dim"
            dims[dim] = {"size": SITES_ONLY_VARIABLE_NUMBER, "chunk_size": SITES_ONLY_VARIABLE_NUMBER}
            field["dimensions"] = [*field["dimensions"], dim]
        if np.dtype(field["dtype"]).kind == "i" and field["name"] != "call_genotype":
            field["dtype"] = "i4"
    return spec


def schema_like(icf_path, template) -> tuple[dict, list[str]]:
    """bio2zarr's schema for the ICF, rewritten to the store's dtypes, shapes, chunks and codecs."""
    from bio2zarr import vcf as b2z

    icf = b2z.IntermediateColumnarFormat(str(icf_path))
    spec = json.loads(icf.generate_schema().asjson())
    store_arrays = {name: a for name, a in template.arrays()}
    dims = spec["dimensions"]
    dims["variants"]["chunk_size"] = schema.variants_chunk_size(template)
    dims["samples"]["chunk_size"] = schema.samples_chunk_size(template)
    dropped = []
    fields = []
    for field in spec["fields"]:
        name = field["name"]
        target = store_arrays.get(name)
        if target is None:
            if name.startswith("call_"):
                dropped.append(name)
                continue
            fields.append(field)
            continue
        if schema.sample_axis(target) is None:
            # INFO and site fields are the store's own (an append never copies them): the batch's
            # keep their shapes, and the store's dtype where the batch's values fit it.
            dtype = _dtype_code(target)
            if dtype is not None and _fits(icf, field.get("source"), dtype):
                field["dtype"] = dtype
            fields.append(field)
            continue
        target_dims = schema.dims(target)
        for dim, size in zip(target_dims, target.shape, strict=True):
            if dim in ("variants", "samples"):
                continue
            have = dims.get(dim, {}).get("size", size)
            if dim in ALLELE_DIMS:  # harmonisation fits the batch's sites to the store's after
                size = max(size, have)
            elif have > size:
                raise InvalidInputError(
                    f"field {name}: the batch needs {have} values along {dim}; the store holds {size}"
                )
            dims.setdefault(dim, {})["size"] = size
            dims[dim]["chunk_size"] = target.chunks[target_dims.index(dim)]
        if list(field["dimensions"]) != list(target_dims):
            field["dimensions"] = list(target_dims)
        dtype = _dtype_code(target)
        if dtype is not None and field.get("source"):
            _check_fits(icf, field["source"], name, dtype)
            field["dtype"] = dtype
        compressor, filters = _numcodecs_config(target)
        if compressor is not None and compressor["id"] == "blosc":  # bio2zarr encodes with blosc only
            field["compressor"], field["filters"] = compressor, filters
        fields.append(field)
    spec["fields"] = fields
    return spec, dropped


def _dtype_code(array) -> str | None:
    dt = array.dtype
    if getattr(dt, "kind", "") in ("T", "O", "U"):
        return None
    return np.dtype(dt).str.lstrip("<|>")


def _fits(icf, source: str | None, dtype: str) -> bool:
    try:
        _check_fits(icf, source or "", "", dtype)
    except InvalidInputError:
        return False
    return True


def _check_fits(icf, source: str, name: str, dtype: str) -> None:
    field = icf.fields.get(source)
    if field is None:
        return
    bounds = schema.dtype_bounds(dtype)
    summary = field.vcf_field.summary
    if bounds is None or np.dtype(dtype).kind == "f":
        return
    lo, hi = bounds
    vmin, vmax = summary.min_value, summary.max_value
    vmin = vmin if vmin is not None and np.isfinite(vmin) else lo
    vmax = vmax if vmax is not None and np.isfinite(vmax) else hi
    if vmax > hi:
        raise InvalidInputError(f"field {name}: value {vmax} does not fit the store's {dtype} "
                                f"(max {int(hi)}); {widen_hint(name, min(vmin, lo), max(vmax, hi))}")
    if vmin < lo:
        raise InvalidInputError(f"field {name}: value {vmin} does not fit the store's {dtype} "
                                f"(min {int(lo)}); {widen_hint(name, vmin, max(vmax, hi))}")


def _numcodecs_config(array):
    """The store array's compressor and filters as bio2zarr's schema writes them (numcodecs dicts)."""
    meta = array.metadata
    if meta.zarr_format == 2:
        comp = meta.compressor.get_config() if meta.compressor is not None else None
        # bio2zarr adds the string codec itself; passing it on would encode strings twice
        filters = [f.get_config() for f in (meta.filters or [])
                   if f.get_config()["id"] not in ("vlen-utf8", "vlen-bytes")] or None
        return comp, filters
    comp = None
    for codec in meta.codecs:
        d = codec.to_dict()
        if d["name"] == "blosc":
            c = dict(d["configuration"])
            shuffle = c.get("shuffle", "noshuffle")
            comp = {"id": "blosc", "cname": c["cname"], "clevel": c["clevel"],
                    "shuffle": SHUFFLE_IDS.get(shuffle, shuffle), "blocksize": c.get("blocksize", 0)}
        elif d["name"] == "zstd":
            comp = {"id": "zstd", "level": d["configuration"].get("level", 0)}
    return comp, None
