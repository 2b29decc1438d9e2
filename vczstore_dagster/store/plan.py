"""The variant plan: what harmonising a batch to the store's variant set does, site by site
counted, with the coverage figures and the signs of another reference that the checks judge.

It is made in one pass over both variant sets (:mod:`vczstore_dagster.store.planner`), kept in a
harmonised batch's root attributes (the batch's own variant arrays are replaced by the store's,
so only the plan still knows what the batch was), and read back by ``check`` and ``append``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vczstore_dagster.store.errors import InvalidInputError

HARMONISATION_ATTR = "vczstore_harmonisation"
PLAN_VERSION = 2
EXAMPLES = 5


def _plain(value):
    """JSON-ready: numpy scalars become Python numbers (zarr attributes are JSON)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclasses.dataclass
class NewAllele:
    """ALT alleles a batch brings to a store site (appended after the site's alleles)."""

    variant: int
    site: str
    alleles: list[str]
    existing: int  # the store's alleles at the site (REF included)


@dataclasses.dataclass
class ContigCounts:
    """One contig's figures. Store side: its sites and how many the batch covers; batch side (a
    contig of the batch's own name): its records and how many no store site takes; ``hits``:
    store positions at which the batch has a record at the same position, one after (1) and one
    before (-1)."""

    store_sites: int = 0
    covered: int = 0
    records: int = 0
    dropped: int = 0
    hits: dict[int, int] = dataclasses.field(default_factory=lambda: {0: 0, 1: 0, -1: 0})

    @property
    def site_coverage(self) -> float | None:
        return self.covered / self.store_sites if self.store_sites else None

    @property
    def dropped_fraction(self) -> float | None:
        return self.dropped / self.records if self.records else None


@dataclasses.dataclass
class VariantPlan:
    store_sites: int = 0
    batch_records: int = 0
    missing_filled: int = 0  # store sites the batch lacks
    dropped: int = 0  # batch records no store site takes
    remapped: int = 0  # store sites whose alleles the batch lists in another order or subset
    split_merged: int = 0  # store sites assembled from several batch records
    new_alleles: list[NewAllele] = dataclasses.field(default_factory=list)
    examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    harmonised: bool = False  # False when the batch already had the store's variants in place
    widths: dict[str, int] = dataclasses.field(default_factory=dict)  # widened dimensions
    contigs: dict[str, ContigCounts] = dataclasses.field(default_factory=dict)
    aliases: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (batch, store)
    length_conflicts: list[tuple[str, str, int, int]] = dataclasses.field(default_factory=list)
    shifts: dict[str, int] = dataclasses.field(default_factory=dict)  # contig → 1 or -1
    version: int = PLAN_VERSION

    @property
    def covered(self) -> int:
        return self.store_sites - self.missing_filled

    @property
    def site_coverage(self) -> float:
        """The share of the store's sites the batch covers."""
        return self.covered / self.store_sites if self.store_sites else 1.0

    @property
    def dropped_fraction(self) -> float:
        """The share of the batch's records that no store site takes."""
        return self.dropped / self.batch_records if self.batch_records else 0.0

    @property
    def num_new_alleles(self) -> int:
        return sum(len(n.alleles) for n in self.new_alleles)

    def counts(self) -> dict[str, int]:
        return {"missing_filled": self.missing_filled, "dropped": self.dropped,
                "remapped": self.remapped, "split_merged": self.split_merged,
                "new_alleles": self.num_new_alleles}

    @property
    def changed(self) -> bool:
        return any(self.counts().values())

    def summary(self) -> str:
        labels = {"missing_filled": "store variants missing from the batch (filled with missing)",
                  "dropped": "batch records not in the store (dropped)",
                  "remapped": "sites with alleles in another order (remapped)",
                  "split_merged": "split multi-allelic sites (merged)",
                  "new_alleles": "new ALT alleles"}
        parts = [f"{n} {labels[k]}" for k, n in self.counts().items() if n]
        return "; ".join(parts) if parts else "the batch has the store's variants"

    def coverage_line(self) -> str:
        return (f"covers {self.covered} of the store's {self.store_sites} sites "
                f"({percent(self.site_coverage)}); {self.dropped} of its {self.batch_records} "
                f"records dropped ({percent(self.dropped_fraction)})")

    def contig(self, name: str) -> ContigCounts:
        return self.contigs.setdefault(name, ContigCounts())

    def note(self, kind: str, site: str) -> None:
        shown = self.examples.setdefault(kind, [])
        if len(shown) < EXAMPLES:
            shown.append(site)

    def coverage_metadata(self) -> dict:
        """The figures as plain numbers (Dagster metadata, JSON)."""
        return {
            "site_coverage": round(self.site_coverage, 6),
            "dropped_fraction": round(self.dropped_fraction, 6),
            "store_sites": self.store_sites,
            "sites_covered": self.covered,
            "batch_records": self.batch_records,
            "records_dropped": self.dropped,
            "new_alleles": self.num_new_alleles,
        }

    def to_attrs(self) -> dict:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_attrs(cls, raw) -> VariantPlan:
        raw = dict(raw)
        raw["new_alleles"] = [NewAllele(**n) for n in raw.get("new_alleles", [])]
        raw["contigs"] = {name: ContigCounts(**{**c, "hits": {int(k): v for k, v in c["hits"].items()}})
                          for name, c in raw.get("contigs", {}).items()}
        raw["aliases"] = [tuple(a) for a in raw.get("aliases", [])]
        raw["length_conflicts"] = [tuple(c) for c in raw.get("length_conflicts", [])]
        return cls(**raw)


def percent(fraction: float | None) -> str:
    if fraction is None:
        return "-"
    text = f"{100 * fraction:.1f}%"
    if text == "100.0%" and fraction < 1:
        return ">99.9%"
    if text == "0.0%" and fraction > 0:
        return "<0.1%"
    return text


def recorded_plan(group, name: str = "") -> VariantPlan | None:
    """The plan a harmonised batch carries in its root attributes (None: not harmonised)."""
    raw = group.attrs.get(HARMONISATION_ATTR)
    if not raw:
        return None
    if raw.get("version", 1) < PLAN_VERSION:
        raise InvalidInputError(f"batch {name} was harmonised by an older vczstore, which kept no "
                                "coverage figures: convert its VCFs --like the store again")
    return VariantPlan.from_attrs(raw)
