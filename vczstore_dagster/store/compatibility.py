"""Can this batch be appended to this store? One pass, one report of findings, each naming the
field, sample, site or contig.

The variant plan (recorded by harmonisation, or made here for a batch converted elsewhere) gives
the coverage figures and the refusals (:mod:`~vczstore_dagster.store.policy`); the batch's
variant arrays must then be the store's; its fields must fit the store's arrays; its samples must
be new; its chunks must be readable. ``append`` runs the same check and carries out the plan.
"""

from __future__ import annotations

import numpy as np

from vczstore_dagster.store import schema
from vczstore_dagster.store.batch import Batch, open_batch
from vczstore_dagster.store.errors import InvalidInputError
from vczstore_dagster.store.findings import SEVERITIES, CompatibilityReport, Finding
from vczstore_dagster.store.integrity import damaged_chunks, describe
from vczstore_dagster.store.plan import recorded_plan
from vczstore_dagster.store.planner import ALLELE_DIMS, plan_variants
from vczstore_dagster.store.policy import Thresholds, assess
from vczstore_dagster.store.samples import batch_sample_findings, store_sample_findings

__all__ = ["SEVERITIES", "CompatibilityReport", "Finding", "check_against_group", "check_batch",
           "check_new_batch"]


def check_batch(store, batch, *, at: str | None = None, allow_new_alleles: bool = False,
                thresholds: Thresholds | None = None) -> CompatibilityReport:
    """Compare ``batch`` (a path or an opened :class:`Batch`) with the store's head (or ``at``).
    New ALT alleles a harmonised batch brings are an error unless ``allow_new_alleles``;
    ``thresholds``: the coverage a batch must reach (default :class:`Thresholds`)."""
    if not isinstance(batch, Batch):
        batch = open_batch(batch)
    return check_against_group(store.readonly_group(at), batch, allow_new_alleles=allow_new_alleles,
                               thresholds=thresholds)


def check_new_batch(batch) -> CompatibilityReport:
    """What can be checked of a batch that will create the store: its samples and its chunks."""
    if not isinstance(batch, Batch):
        batch = open_batch(batch)
    findings = _chunks(batch, list(schema.sample_arrays(batch.group)) + _VARIANTS)
    return CompatibilityReport(findings or batch_sample_findings(batch), batch.num_samples)


def check_against_group(group, batch: Batch, *, allow_new_alleles: bool = False,
                        thresholds: Thresholds | None = None) -> CompatibilityReport:
    b = batch.group
    name = batch.name
    shared = [n for n in schema.sample_arrays(group) if n in b]
    findings: list[Finding] = _chunks(batch, shared + _VARIANTS)
    if findings:  # nothing more can be read with certainty
        return CompatibilityReport(findings, batch.num_samples)
    add = findings.append
    plan, variant_findings = _variants(group, batch, allow_new_alleles, thresholds)
    findings += variant_findings

    if schema.variants_chunk_size(group) != schema.variants_chunk_size(b):
        add(Finding("variant_chunk_size", "warning", "layout",
                    f"batch {name} has variant chunks of {schema.variants_chunk_size(b)}; the store "
                    f"{schema.variants_chunk_size(group)}: every chunk will be re-encoded"))
    if schema.zarr_format(group) != schema.zarr_format(b):
        add(Finding("zarr_format", "warning", "layout",
                    f"batch {name} is Zarr format {schema.zarr_format(b)}; the store "
                    f"{schema.zarr_format(group)}: every chunk will be re-encoded"))

    findings += batch_sample_findings(batch)
    if batch.num_samples:  # a batch without samples has nothing more to compare
        findings += _compare_fields(group, b, name, bool(plan and plan.new_alleles))
        findings += store_sample_findings(group, batch)

    fast = False
    if not any(f.severity == "error" for f in findings):
        fast = _fast_path(group, batch)
        if fast:
            add(Finding("fast_path", "info", "layout",
                        "encoded chunks can be copied (only a partial chunk column, if any, is re-encoded)"))
        else:
            add(Finding("fast_path", "info", "layout",
                        "encodings or chunk grids differ: the batch will be re-encoded chunk by chunk"))
    return CompatibilityReport(findings, batch.num_samples, fast, plan)


def _variants(group, batch: Batch, allow_new_alleles, thresholds):
    """The plan (recorded by harmonisation, or made now) and the findings about the batch's
    variants: a harmonised batch's variant arrays must be the store's; a batch converted elsewhere
    must have the store's records in the store's places (the plan's walk says so)."""
    name, b = batch.name, batch.group
    try:
        plan = recorded_plan(b, name)
    except InvalidInputError as exc:
        return None, [Finding("plan_outdated", "error", "variants", str(exc))]
    out = []
    if plan is None:
        try:
            plan = plan_variants(group, b)
        except InvalidInputError as exc:  # records out of order
            return None, [*_identity(group, b, name), Finding(
                "variant_order", "error", "variants", str(exc).replace("batch:", f"batch {name}:", 1))]
        same_contigs = list(schema.strings(group["contig_id"][...])) == list(
            schema.strings(b["contig_id"][...]))
        if plan.harmonised or not same_contigs:
            out += _identity(group, b, name)
            out.append(Finding("harmonisation_needed", "info", "variants",
                               f"batch {name} is not harmonised to the store's variants "
                               f"({plan.summary()}): convert its VCFs with --like STORE"))
    else:
        out += _identity(group, b, name, {n.variant for n in plan.new_alleles})
    out += assess(plan, name, thresholds, allow_new_alleles=allow_new_alleles)
    return plan, out


def _identity(group, b, name, new_sites=frozenset()) -> list[Finding]:
    """Where the batch's variant arrays differ from the store's (after new alleles, if any)."""
    nv_store, nv_batch = schema.num_variants(group), schema.num_variants(b)
    if nv_store != nv_batch:
        return [Finding("variant_count", "error", "variants",
                        f"batch {name} has {nv_batch} variants; the store has {nv_store}")]
    return _compare_variants(group, b, name, new_sites)


def _compare_variants(group, b, name, new_sites=frozenset()) -> list[Finding]:
    out = []
    store_contigs = schema.strings(group["contig_id"][...])
    batch_contigs = schema.strings(b["contig_id"][...])
    if list(store_contigs) != list(batch_contigs):
        only_b = sorted(set(batch_contigs) - set(store_contigs))
        only_s = sorted(set(store_contigs) - set(batch_contigs))
        detail = []
        if only_b:
            detail.append(f"only in the batch: {', '.join(only_b[:5])}")
        if only_s:
            detail.append(f"only in the store: {', '.join(only_s[:5])}")
        if not detail:
            detail.append("same contigs in another order")
        out.append(Finding("contig_id", "error", "variants",
                           f"batch {name}: contig_id differs from the store ({'; '.join(detail)})"))
        return out
    step = schema.variants_chunk_size(group) * 8
    n = schema.num_variants(group)
    first = {}
    for start in range(0, n, step):
        stop = min(n, start + step)
        for field in ("variant_contig", "variant_position", "variant_allele"):
            if field in first:
                continue
            sv = np.asarray(group[field][start:stop])
            bv = np.asarray(b[field][start:stop])
            if field == "variant_allele":
                width = max(sv.shape[1], bv.shape[1])
                sv = _pad_alleles(sv, width)
                bv = _pad_alleles(bv, width)
                rows = [i - start for i in new_sites if start <= i < stop]
                if rows:  # new alleles recorded by harmonisation follow the store's alleles
                    bv[rows] = np.where(sv[rows] == "", "", bv[rows])
                diff = np.any(sv != bv, axis=1)
            else:
                diff = sv.astype(np.int64) != bv.astype(np.int64)
            if np.any(diff):
                i = int(np.argmax(diff))
                first[field] = (start + i, sv[i], bv[i], int(np.sum(diff)))
    for field, (i, sv, bv, count) in first.items():
        site = _site(group, i)
        if field == "variant_allele":
            sv = ",".join(a for a in schema.strings(sv) if a)
            bv = ",".join(a for a in schema.strings(bv) if a)
        out.append(Finding(field, "error", "variants",
                           f"batch {name}: {field} differs at {count} variant(s); first at variant {i} "
                           f"({site}): store {sv}, batch {bv}"))
    return out


def _pad_alleles(a, width):
    a = schema.strings(a)
    if a.shape[1] < width:
        a = np.concatenate([a, np.full((a.shape[0], width - a.shape[1]), "", dtype=a.dtype)], axis=1)
    return a


def _site(group, i) -> str:
    contigs = schema.strings(group["contig_id"][...])
    contig = contigs[int(group["variant_contig"][i])]
    return f"{contig}:{int(group['variant_position'][i])}"


def _compare_fields(group, b, name, new_alleles: bool = False) -> list[Finding]:
    out = []
    store_fields = schema.call_fields(group)
    batch_fields = schema.call_fields(b)
    for field, arr in store_fields.items():
        if field not in batch_fields:
            out.append(Finding("field_missing", "error", "fields",
                               f"batch {name}: field {field} is in the store but not in the batch"))
            continue
        s, t = schema.FieldShape.of(arr), schema.FieldShape.of(batch_fields[field])
        if schema.dims(arr) != schema.dims(batch_fields[field]):
            out.append(Finding("field_shape", "error", "fields",
                               f"batch {name}: field {field} has dimensions "
                               f"{schema.dims(batch_fields[field])}; the store {schema.dims(arr)}"))
        elif new_alleles and s.trailing_dims and s.trailing_dims[-1] in ALLELE_DIMS and (
                s.trailing[:-1] == t.trailing[:-1] and s.trailing[-1] < t.trailing[-1]):
            out.append(Finding("field_widened", "info", "fields",
                               f"batch {name}: field {field} has trailing shape {t.trailing} for its "
                               f"new alleles; the store {s.trailing}"))
        elif s.trailing != t.trailing:
            ploidy = "ploidy" in s.trailing_dims
            smaller = all(b <= a for a, b in zip(s.trailing, t.trailing, strict=True))
            what = "ploidy" if ploidy else "trailing shape"
            if smaller and not ploidy:
                out.append(Finding("field_shape", "warning", "fields",
                                   f"batch {name}: field {field} has trailing shape {t.trailing}; "
                                   f"the store {s.trailing}: padded with fill values"))
            else:
                out.append(Finding("field_shape", "error", "fields",
                                   f"batch {name}: field {field} has {what} {t.trailing}; the store "
                                   f"{s.trailing}" + ("" if ploidy else " (convert the batch with --like STORE)")))
        if s.dtype != t.dtype:
            severity = "error" if not _dtype_fits(t.dtype, s.dtype) else "warning"
            why = " (values are converted)"
            if severity == "error":
                why = " (values would not fit" + (
                    f"; `vczstore widen STORE {field} {t.dtype}` makes room for them)"
                    if _widens(s.dtype, t.dtype) else ")")
            out.append(Finding("field_dtype", severity, "fields",
                               f"batch {name}: field {field} is {t.dtype}; the store {s.dtype}{why}"))
    for field in sorted(set(batch_fields) - set(store_fields)):
        out.append(Finding("field_extra", "warning", "fields",
                           f"batch {name}: field {field} is not in the store and will be dropped"))
    return out


def _widens(store_dtype: str, batch_dtype: str) -> bool:
    from vczstore_dagster.store.widen import widens

    try:
        return widens(store_dtype, batch_dtype)
    except TypeError:
        return False


def _dtype_fits(src: str, dst: str) -> bool:
    try:
        return bool(np.can_cast(np.dtype(src), np.dtype(dst), casting="safe"))
    except TypeError:
        return src == dst


_VARIANTS = list(schema.VARIANT_IDENTITY)  # what the check reads of the batch's variant arrays


def _chunks(batch: Batch, names) -> list[Finding]:
    """Damaged chunks of the arrays the check reads and the append copies: found first."""
    damaged = damaged_chunks(batch.path, batch.group, [n for n in names if n in batch.group])
    return [Finding("chunk_damaged", "error", "fields", describe(batch.name, damaged))] if damaged else []


def _fast_path(group, batch: Batch) -> bool:
    n0 = schema.num_samples(group)
    s = schema.samples_chunk_size(group)
    if batch.sample_offset != n0 % s:
        return False
    batch_fields = schema.sample_arrays(batch.group)
    for field, arr in schema.sample_arrays(group).items():
        other = batch_fields.get(field)
        if other is None or schema.encoding_signature(arr) != schema.encoding_signature(other):
            return False
    return True
