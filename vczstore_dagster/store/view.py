"""The store (or a release) as VCF text, through vcztools' reader on the session at that ref,
with bcftools view's selections: regions, targets, samples and filter expressions.

Withdrawn samples are never shown, at any ref: a release tagged before a removal still holds the
sample until ``purge`` redacts it, so the store's current withdrawn registry (salted hashes) hides
it there too. Asking for one by name is the same error as asking for an unknown sample: whether an
ID was ever in the cohort is not told.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vczstore_dagster.store import schema
from vczstore_dagster.store.errors import InvalidInputError
from vczstore_dagster.store.ledger import read_ledger

# What bcftools view (and vcztools) recompute for a sample subset unless told not to (-I).
SUBSET_FILL_TAGS = frozenset({"AC", "AN"})


@dataclasses.dataclass(frozen=True)
class Selection:
    """What to show. ``regions``/``targets``: ``CHROM``, ``CHROM:POS`` or ``CHROM:FROM-TO``
    (1-based, inclusive); regions use the store's index, targets scan the records (and can be
    complemented). ``samples`` in the order given, or with ``samples_complement`` every sample but
    those. ``include``/``exclude``: a bcftools filter expression (``-i``/``-e``)."""

    regions: list[str] | None = None
    targets: list[str] | None = None
    targets_complement: bool = False
    samples: list[str] | None = None
    samples_complement: bool = False
    include: str | None = None
    exclude: str | None = None

    @classmethod
    def parse(cls, *, regions: str | None = None, regions_file: str | None = None,
              targets: str | None = None, targets_file: str | None = None,
              samples: str | None = None, samples_file: str | None = None,
              include: str | None = None, exclude: str | None = None) -> Selection:
        """From bcftools' spellings: comma-separated lists, files (regions and targets: a
        tab-separated CHROM, FROM, TO per line; samples: one ID a line), ``^`` to complement
        targets and samples."""
        for (a, va), (b, vb) in ((("-r/--regions", regions), ("-R/--regions-file", regions_file)),
                                 (("-t/--targets", targets), ("-T/--targets-file", targets_file)),
                                 (("-s/--samples", samples), ("-S/--samples-file", samples_file)),
                                 (("-i/--include", include), ("-e/--exclude", exclude))):
            if va is not None and vb is not None:
                raise InvalidInputError(f"give {a} or {b}, not both")
        targets_complement, samples_complement = False, False
        if targets_file is not None:
            targets_complement, targets_file = _complement(targets_file)
            targets_list = _regions_file(targets_file, "-T/--targets-file")
        elif targets is not None:
            targets_complement, targets = _complement(targets)
            targets_list = _comma_list(targets, "-t/--targets")
        else:
            targets_list = None
        if regions_file is not None:
            regions_list = _regions_file(regions_file, "-R/--regions-file")
        else:
            regions_list = None if regions is None else _comma_list(regions, "-r/--regions")
        if samples_file is not None:
            samples_complement, samples_file = _complement(samples_file)
            samples_list = _sample_file(samples_file)
        elif samples is not None:
            samples_complement, samples = _complement(samples)
            samples_list = _comma_list(samples, "-s/--samples")
        else:
            samples_list = None
        return cls(regions_list, targets_list, targets_complement, samples_list,
                   samples_complement, include, exclude)


def write_vcf(store, output, *, at: str | None = None, selection: Selection | None = None) -> None:
    """Write VCF to ``output`` (a path or a text file): the store at ``at`` (a release, branch or
    snapshot; default the head of main), restricted to ``selection``. Withdrawn samples are not
    shown; naming one (or an unknown sample) in the selection is an
    :class:`~vczstore_dagster.store.InvalidInputError`."""
    from vcztools import bcftools_filter, regions
    from vcztools.retrieval import VczReader
    from vcztools.vcf_writer import write_vcf as vcztools_write_vcf

    selection = selection or Selection()
    group = store.readonly_group(at)
    ids, hidden, held = visible_samples(store, group)
    indexes = _sample_indexes(selection, ids, hidden, held, at or "main")
    with VczReader(group) as reader:
        variant_filter = None
        if selection.include is not None or selection.exclude is not None:
            option = "-i/--include" if selection.include is not None else "-e/--exclude"
            try:
                variant_filter = bcftools_filter.BcftoolsFilter(
                    reader, include=selection.include, exclude=selection.exclude)
            except Exception as exc:  # vcztools' parser raises several kinds
                raise InvalidInputError(f"{option}: {exc}") from exc
        if indexes is not None:
            reader.set_sample_indexes(indexes)
        if selection.regions is not None or selection.targets is not None:
            try:
                plan = regions.build_chunk_plan(reader, regions=selection.regions,
                                                targets=selection.targets,
                                                targets_complement=selection.targets_complement)
            except ValueError as exc:
                raise InvalidInputError(f"-r/-R/-t/-T: {exc}") from exc
            reader.set_variants(plan)
        # bcftools view evaluates a FORMAT filter over every sample, then subsets; a withdrawn
        # sample still held at this ref must not take part: then the filter sees the selection.
        reader.set_bcftools_semantics(full_sample_filter=not held.any())
        if variant_filter is not None:
            reader.set_variant_filter(variant_filter)
        vcztools_write_vcf(reader, output, no_version=True,
                           fill_tags=SUBSET_FILL_TAGS if indexes is not None else None)


def visible_samples(store, group) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``group``'s sample IDs, a mask of those never to show (blank: removed at that ref; or in
    the store's withdrawn registry now) and a mask of the latter (a ref from before the removal
    still holds them)."""
    ids = schema.strings(group["sample_id"][...])
    held = np.zeros(len(ids), dtype=bool)
    ledger = read_ledger(store.readonly_group())
    if ledger.withdrawn:
        withdrawn = set(ledger.withdrawn)
        held = np.array([bool(s) and ledger.hash_sample(s) in withdrawn for s in ids], dtype=bool)
    return ids, (ids == "") | held, held


def _sample_indexes(selection: Selection, ids: np.ndarray, hidden: np.ndarray, held: np.ndarray,
                    ref: str) -> np.ndarray | None:
    """The store indexes to show, in order; None: every sample that vcztools shows (it leaves
    out blank IDs itself)."""
    if selection.samples is None:
        return np.flatnonzero(~hidden) if held.any() else None
    position = {s: i for i, s in enumerate(ids.tolist()) if not hidden[i]}
    unknown = [s for s in selection.samples if s not in position]
    if unknown:
        raise InvalidInputError(
            f"sample(s) not in the store at {ref}: {', '.join(unknown)} (unknown, or withdrawn: "
            "withdrawn samples are never shown)")
    if not selection.samples_complement:
        repeated = sorted({s for s in selection.samples if selection.samples.count(s) > 1})
        if repeated:
            raise InvalidInputError(f"sample(s) named more than once: {', '.join(repeated)}")
        return np.array([position[s] for s in selection.samples], dtype=np.int64)
    left = sorted(set(position.values()) - {position[s] for s in selection.samples})
    if not left:
        raise InvalidInputError(f"-s/-S ^...: no sample left to show at {ref}")
    return np.array(left, dtype=np.int64)


def _complement(value: str) -> tuple[bool, str]:
    return (True, value[1:]) if value.startswith("^") else (False, value)


def _comma_list(value: str, option: str) -> list[str]:
    items = [v.strip() for v in value.split(",")]
    if not items or any(not v for v in items):
        raise InvalidInputError(f"{option}: an empty item in {value!r}")
    return items


def _regions_file(path: str, option: str) -> list[str]:
    """bcftools' regions file: CHROM, FROM, TO (1-based, inclusive) tab-separated; or CHROM and
    POS; ``#`` lines and blank lines skipped."""
    regions = []
    for number, line in enumerate(_read(path, option).splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.rstrip("\n").split("\t")
        try:
            bounds = [int(c) for c in cols[1:3]]
        except ValueError:
            bounds = []
        if not cols[0] or not bounds:
            raise InvalidInputError(
                f"{option} {path}, line {number}: expected CHROM<TAB>FROM<TAB>TO, got {line!r}")
        start, end = bounds[0], bounds[-1]
        regions.append(f"{cols[0]}:{start}-{end}")
    if not regions:
        raise InvalidInputError(f"{option} {path}: no region in the file")
    return regions


def _sample_file(path: str) -> list[str]:
    from vczstore_dagster.store.remove import parse_sample_list

    samples = parse_sample_list(_read(path, "-S/--samples-file"))
    if not samples:
        raise InvalidInputError(f"-S/--samples-file {path}: no sample ID in the file")
    return samples


def _read(path: str, option: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise InvalidInputError(f"{option}: cannot read {path}: {exc.strerror}") from exc
