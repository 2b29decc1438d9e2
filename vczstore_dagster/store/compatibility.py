"""Can this batch be appended to this store? A report of findings, each naming the field or sample."""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from vczstore_dagster.store import schema
from vczstore_dagster.store.batch import Batch, open_batch
from vczstore_dagster.store.errors import VczStoreError
from vczstore_dagster.store.harmonise import ALLELE_DIMS, plan, report_of
from vczstore_dagster.store.ledger import read_ledger

SEVERITIES = ("error", "warning", "info")


@dataclasses.dataclass(frozen=True)
class Finding:
    id: str
    severity: str
    concern: str  # variants | fields | samples | layout | source
    message: str
    # The same without any sample ID, for logs, Dagster metadata and anything else that is kept.
    safe_message: str | None = None

    @property
    def public_message(self) -> str:
        return self.safe_message if self.safe_message is not None else self.message


@dataclasses.dataclass
class CompatibilityReport:
    findings: list[Finding]
    num_samples: int = 0
    fast_path: bool = False

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def by_concern(self, concern: str) -> list[Finding]:
        return [f for f in self.findings if f.concern == concern]

    def summary(self) -> str:
        if self.ok:
            return f"compatible: {self.num_samples} samples; {len(self.warnings)} warning(s)"
        return "; ".join(f.message for f in self.errors)

    def public_summary(self) -> str:
        """The summary with no sample ID in it."""
        if self.ok:
            return self.summary()
        return "; ".join(f.public_message for f in self.errors)


def check_batch(store, batch, *, at: str | None = None,
                allow_new_alleles: bool = False) -> CompatibilityReport:
    """Compare ``batch`` (a path or an opened :class:`Batch`) with the store's head (or ``at``).
    New ALT alleles a harmonised batch brings are an error unless ``allow_new_alleles``."""
    if not isinstance(batch, Batch):
        batch = open_batch(batch)
    return check_against_group(store.readonly_group(at), batch, allow_new_alleles=allow_new_alleles)


def check_against_group(group, batch: Batch, *, allow_new_alleles: bool = False) -> CompatibilityReport:
    findings: list[Finding] = []
    add = findings.append
    b = batch.group
    name = batch.name
    harmonised = report_of(b)
    new_sites = {n.variant for n in harmonised.new_alleles} if harmonised else set()

    nv_store, nv_batch = schema.num_variants(group), schema.num_variants(b)
    if nv_store != nv_batch:
        add(Finding("variant_count", "error", "variants",
                    f"batch {name} has {nv_batch} variants; the store has {nv_store}"))
    else:
        findings.extend(_compare_variants(group, b, name, new_sites))
    mismatch = any(f.severity == "error" for f in findings)
    findings.extend(_harmonisation(group, batch, harmonised, mismatch, allow_new_alleles))

    if schema.variants_chunk_size(group) != schema.variants_chunk_size(b):
        add(Finding("variant_chunk_size", "warning", "layout",
                    f"batch {name} has variant chunks of {schema.variants_chunk_size(b)}; the store "
                    f"{schema.variants_chunk_size(group)}: every chunk will be re-encoded"))
    if schema.zarr_format(group) != schema.zarr_format(b):
        add(Finding("zarr_format", "warning", "layout",
                    f"batch {name} is Zarr format {schema.zarr_format(b)}; the store "
                    f"{schema.zarr_format(group)}: every chunk will be re-encoded"))

    findings.extend(_compare_fields(group, b, name, bool(new_sites)))
    findings.extend(_check_samples(group, batch))

    fast = False
    if not any(f.severity == "error" for f in findings):
        fast = _fast_path(group, batch)
        if fast:
            add(Finding("fast_path", "info", "layout",
                        "encoded chunks can be copied (only a partial chunk column, if any, is re-encoded)"))
        else:
            add(Finding("fast_path", "info", "layout",
                        "encodings or chunk grids differ: the batch will be re-encoded chunk by chunk"))
    return CompatibilityReport(findings, batch.num_samples, fast)


def _read_all(array):
    return np.asarray(array[...])


def _harmonisation(group, batch: Batch, report, mismatch: bool, allow_new_alleles: bool):
    """What harmonisation did (info), new alleles (an error unless allowed), and whether a batch
    whose variants differ from the store's would need harmonising (with what it would do)."""
    out = []
    name = batch.name
    if report is not None:
        for key, n in report.counts().items():
            if n and key != "new_alleles":
                shown = report.examples.get(key, [])[:3]
                out.append(Finding(f"harmonised_{key}", "info", "variants",
                                   f"batch {name}: harmonised: {n} " + _HARMONISED[key]
                                   + (f" (e.g. {', '.join(shown)})" if shown else "")))
        if report.new_alleles:
            first = report.new_alleles[0]
            text = (f"batch {name}: {report.num_new_alleles} new ALT allele(s) at "
                    f"{len(report.new_alleles)} store site(s), first at {first.site}: "
                    f"{','.join(first.alleles)}")
            if allow_new_alleles:
                out.append(Finding("new_alleles", "info", "variants",
                                   text + "; they are added to the store with the append"))
            else:
                out.append(Finding("new_alleles", "error", "variants",
                                   text + "; the store's variant set is fixed: append with "
                                   "--allow-new-alleles to add them"))
    if mismatch:
        try:
            detail = plan(group, batch.group).summary()
        except VczStoreError as exc:
            detail = str(exc)
        out.append(Finding("harmonisation_needed", "info", "variants",
                           f"batch {name} is not harmonised to the store's variants ({detail}): "
                           "convert its VCFs with --like STORE"))
    return out


_HARMONISED = {
    "missing_filled": "store variant(s) the batch lacks, filled with missing values",
    "dropped": "batch record(s) not in the store, dropped",
    "remapped": "site(s) whose alleles the batch lists in another order or subset, remapped",
    "split_merged": "multi-allelic site(s) split into several records, merged",
}


def _compare_variants(group, b, name, new_sites=frozenset()) -> list[Finding]:
    out = []
    store_contigs = schema.strings(_read_all(group["contig_id"]))
    batch_contigs = schema.strings(_read_all(b["contig_id"]))
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
    contigs = schema.strings(_read_all(group["contig_id"]))
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


def _check_samples(group, batch: Batch) -> list[Finding]:
    out = []
    name = batch.name
    ids = batch.sample_ids()
    empty = np.flatnonzero(ids == "")
    if len(empty):
        out.append(Finding("sample_id_empty", "error", "samples",
                           f"batch {name}: {len(empty)} sample(s) have an empty id "
                           f"(first at batch position {int(empty[0])})"))
    counts = collections.Counter(ids[ids != ""])
    dups = sorted(s for s, c in counts.items() if c > 1)
    if dups:
        out.append(Finding("sample_id_duplicate", "error", "samples",
                           f"batch {name}: sample {dups[0]} appears {counts[dups[0]]} times in the batch"
                           + (f" ({len(dups)} duplicated ids in all)" if len(dups) > 1 else ""),
                           f"batch {name}: {len(dups)} sample id(s) appear more than once in the batch"))
    existing = set(schema.strings(group["sample_id"][...])) - {""}
    clash = sorted(set(ids) & existing)
    if clash:
        out.append(Finding("sample_id_in_store", "error", "samples",
                           f"batch {name}: sample {clash[0]} is already in the store"
                           + (f" ({len(clash)} such samples)" if len(clash) > 1 else ""),
                           f"batch {name}: {len(clash)} sample(s) are already in the store"))
    ledger = read_ledger(group)
    if ledger.withdrawn:
        withdrawn = set(ledger.withdrawn)
        hits = [s for s in ids if ledger.hash_sample(s) in withdrawn]
        if hits:
            out.append(Finding("sample_id_withdrawn", "error", "samples",
                               f"batch {name}: sample {hits[0]} was withdrawn from the store and "
                               "cannot be appended again"
                               + (f" ({len(hits)} withdrawn samples in the batch)" if len(hits) > 1 else ""),
                               f"batch {name}: {len(hits)} sample(s) were withdrawn from the store and "
                               "cannot be appended again"))
    return out


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
