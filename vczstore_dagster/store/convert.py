"""VCF files → a VCZ batch encoded in a store's schema (dtypes, trailing shapes, chunks, codecs,
Zarr format) and laid out on the store's sample grid, so that appending it copies encoded chunks."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import numpy as np

from vczstore_dagster.store import schema
from vczstore_dagster.store.errors import InvalidInputError
from vczstore_dagster.store.harmonise import DEFAULT, harmonise_into
from vczstore_dagster.store.plan import VariantPlan
from vczstore_dagster.store.planner import ALLELE_DIMS
from vczstore_dagster.store.policy import Thresholds
from vczstore_dagster.store.widen import widen_hint

SITES_ONLY_VARIABLE_NUMBER = 4
SHUFFLE_IDS = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


@dataclasses.dataclass
class ConvertResult:
    path: str
    num_samples: int
    num_variants: int
    sample_offset: int
    dropped_fields: list[str]
    seconds: float
    harmonisation: VariantPlan | None = None  # with ``like``: the plan harmonising carried out


def convert_vcfs(vcfs, out, *, like=None, progress: bool = False, worker_processes: int = 0,
                 variants_chunk_size: int | None = None, samples_chunk_size: int | None = None,
                 zarr_format: int = 3, thresholds: Thresholds | None = DEFAULT) -> ConvertResult:
    """Convert ``vcfs`` into a VCZ at ``out``; with ``like`` (a Store), in that store's schema and
    harmonised to its variant set, refused (nothing written) when the variant plan fails
    ``thresholds`` or shows another reference (None: record the plan, leave the verdict to
    ``check``)."""
    from bio2zarr import vcf as b2z

    t0 = time.perf_counter()
    out = pathlib.Path(out)
    if out.exists():
        raise InvalidInputError(f"{out}: already exists; choose a new output path")
    vcfs = [pathlib.Path(v) for v in vcfs]
    for v in vcfs:
        if not v.is_file():
            raise InvalidInputError(f"{v}: no such VCF file")
    template = like.readonly_group() if like is not None else None
    with tempfile.TemporaryDirectory(prefix="vczstore-convert-", dir=out.parent) as tmp:
        tmp = pathlib.Path(tmp)
        inputs = [_indexed(v, tmp) for v in vcfs]
        icf = tmp / "batch.icf"
        try:
            b2z.explode(str(icf), [str(v) for v in inputs], worker_processes=worker_processes,
                        show_progress=progress)
        except Exception as exc:
            raise InvalidInputError(_unreadable(vcfs, exc)) from exc
        if template is not None and _num_samples(icf) == 0:
            raise InvalidInputError(f"{', '.join(map(str, vcfs))}: no samples, so nothing to append "
                                    "(a variants-only VCF starts a store: init --variants)")
        dropped: list[str] = []
        schema_path = None
        fmt = zarr_format
        if template is not None:
            spec, dropped = _schema_like(icf, template)
            schema_path = tmp / "schema.json"
            schema_path.write_text(json.dumps(spec))
            fmt = schema.zarr_format(template)
        elif _num_samples(icf) == 0:
            schema_path = tmp / "schema.json"
            schema_path.write_text(json.dumps(_sites_only_schema(
                icf, variants_chunk_size, samples_chunk_size)))
        offset = 0
        if template is not None:
            offset = schema.num_samples(template) % schema.samples_chunk_size(template)
        encoded = tmp / "encoded.vcz" if template is not None else out
        try:
            b2z.encode(str(icf), str(encoded), schema_path=str(schema_path) if schema_path else None,
                       variants_chunk_size=None if schema_path else variants_chunk_size,
                       samples_chunk_size=None if schema_path else samples_chunk_size,
                       worker_processes=worker_processes, show_progress=progress, zarr_format=fmt)
        except (ValueError, NotImplementedError, TypeError, OverflowError) as exc:
            field = _failing_field(exc)
            raise InvalidInputError(
                f"{', '.join(map(str, vcfs))}: " + (f"field {field} " if field else "")
                + f"cannot be encoded in the store's schema ({exc})"
            ) from exc
        harmonisation = None
        if template is not None:  # the store's variant set, laid out on the store's sample grid
            harmonisation = harmonise_into(template, encoded, out, sample_offset=offset,
                                           thresholds=thresholds, name=out.name)
    import zarr

    g = zarr.open_group(str(out), mode="r")
    return ConvertResult(str(out), schema.num_samples(g) - offset, schema.num_variants(g), offset,
                         dropped, time.perf_counter() - t0, harmonisation)


def _indexed(vcf: pathlib.Path, tmp: pathlib.Path) -> pathlib.Path:
    """bio2zarr needs bgzipped, indexed VCFs: make a copy that is, when the input is not."""
    if any(pathlib.Path(str(vcf) + ext).exists() for ext in (".csi", ".tbi")):
        return vcf
    bcftools = shutil.which("bcftools")
    if bcftools is None:
        raise InvalidInputError(f"{vcf}: not indexed, and bcftools is not installed to index it")
    target = tmp / (vcf.name.removesuffix(".gz").removesuffix(".vcf") + ".vcf.gz")
    for cmd in ([bcftools, "view", "--no-version", "-Oz", "-o", str(target), str(vcf)],
                [bcftools, "index", "-f", str(target)]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise InvalidInputError(f"{vcf}: cannot be read as VCF: {proc.stderr.strip()[:300]}")
    return target


def _unreadable(vcfs, exc) -> str:
    """Why VCF files cannot be read: htslib's own words (bcftools reads each file; bio2zarr's
    exception often says nothing), else bio2zarr's."""
    bcftools = shutil.which("bcftools")
    for vcf in vcfs if bcftools else ():
        proc = subprocess.run([bcftools, "view", "--no-version", "-Ou", "-o", os.devnull, str(vcf)],
                              capture_output=True, text=True)
        said = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        if proc.returncode != 0 or any(line.startswith("[E::") for line in said):
            return f"{vcf}: cannot be read as VCF: {'; '.join(said[:3])[:400]}"
    reason = str(exc).strip() or type(exc).__name__
    return f"{', '.join(map(str, vcfs))}: cannot be read as VCF ({reason})"


def _failing_field(exc) -> str | None:
    """The field bio2zarr was encoding when it raised (its frames hold the field's spec)."""
    tb, name = exc.__traceback__, None
    while tb is not None:
        spec = tb.tb_frame.f_locals.get("array_spec")
        name = getattr(spec, "name", None) or name
        tb = tb.tb_next
    return name


def _num_samples(icf_path) -> int:
    from bio2zarr import vcf as b2z

    return len(b2z.IntermediateColumnarFormat(str(icf_path)).metadata.samples)


def _sites_only_schema(icf_path, variants_chunk_size, samples_chunk_size, ploidy: int = 2) -> dict:
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


def _schema_like(icf_path, template) -> tuple[dict, list[str]]:
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
