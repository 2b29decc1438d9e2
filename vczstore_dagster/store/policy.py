"""What a batch's variant plan may cost the store: thresholds, and the findings that judge it.

Harmonising is for a batch from a neighbouring array version or imputation run, not for one that
is simply wrong. Refused by default (errors): coverage of the store's sites below
``min_site_coverage``, more than ``max_dropped_fraction`` of the batch's records dropped, contigs
named another way, contig lengths that differ, positions that match far better shifted by one,
and new ALT alleles (unless allowed). Smaller losses are warnings; the figures are always shown.
"""

from __future__ import annotations

import dataclasses

from vczstore_dagster.store.errors import InvalidInputError
from vczstore_dagster.store.findings import Finding
from vczstore_dagster.store.plan import VariantPlan, percent

DEFAULT_MIN_SITE_COVERAGE = 0.5
DEFAULT_MAX_DROPPED_FRACTION = 0.5
WARN_SITE_COVERAGE = 0.99  # below: a warning
WARN_DROPPED_FRACTION = 0.01  # above: a warning
SHOWN = 5


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """``min_site_coverage``: the least share of the store's sites a batch must cover;
    ``max_dropped_fraction``: the largest share of the batch's records that may be dropped."""

    min_site_coverage: float = DEFAULT_MIN_SITE_COVERAGE
    max_dropped_fraction: float = DEFAULT_MAX_DROPPED_FRACTION

    def __post_init__(self):
        for flag, value in (("--min-site-coverage", self.min_site_coverage),
                            ("--max-dropped-fraction", self.max_dropped_fraction)):
            if not isinstance(value, int | float) or not 0 <= value <= 1:
                raise InvalidInputError(f"{flag} {value!r}: expected a fraction from 0 to 1")

    @classmethod
    def of(cls, min_site_coverage: float | None = None,
           max_dropped_fraction: float | None = None) -> Thresholds:
        """The defaults, with any value given instead."""
        given = {k: float(v) for k, v in (("min_site_coverage", min_site_coverage),
                                          ("max_dropped_fraction", max_dropped_fraction))
                 if v is not None}
        return cls(**given)


def assess(plan: VariantPlan, name: str, thresholds: Thresholds | None = None, *,
           allow_new_alleles: bool = False) -> list[Finding]:
    """The findings about batch ``name``'s variant plan: refusals, warnings and the figures."""
    thresholds = thresholds or Thresholds()
    out = []
    out += _naming(plan, name)
    out += _lengths(plan, name)
    out += _shifts(plan, name)
    out.append(_coverage(plan, name, thresholds))
    out.append(_dropped(plan, name, thresholds))
    out += _remapped(plan, name)
    if plan.new_alleles:
        out.append(_new_alleles(plan, name, allow_new_alleles))
    return out


def _finding(id_, severity, message) -> Finding:
    return Finding(id_, severity, "variants", message)


def _listed(items, shown: int = SHOWN) -> str:
    items = list(items)
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def _naming(plan: VariantPlan, name: str) -> list[Finding]:
    if not plan.aliases:
        return []
    pairs = [f"{b} ({s} in the store; {plan.contigs[b].records} records)" for b, s in plan.aliases]
    return [_finding(
        "contig_naming", "error",
        f"batch {name} names contigs another way than the store: {_listed(pairs)}; none of their "
        "records would reach the store. Rename the batch's contigs to the store's "
        "(bcftools annotate --rename-chrs) and convert it again")]


def _lengths(plan: VariantPlan, name: str) -> list[Finding]:
    if not plan.length_conflicts:
        return []
    shown = [f"{s} is {ls:,} bp in the store and {lb:,} bp in the batch"
             + (f" (as {b})" if b != s else "") for s, b, ls, lb in plan.length_conflicts]
    return [_finding(
        "contig_length", "error",
        f"batch {name}: contig {_listed(shown, 3)} (VCF headers): the batch is on another "
        "reference build than the store")]


def _shifts(plan: VariantPlan, name: str) -> list[Finding]:
    if not plan.shifts:
        return []
    parts = []
    for contig, s in plan.shifts.items():
        c = plan.contigs[contig]
        parts.append(f"on {contig} {c.hits[s]} of the store's {c.store_sites} sites have a batch "
                     f"record at POS{s:+d} and {c.hits[0]} at POS")
    return [_finding(
        "position_shift", "error",
        f"batch {name}: its positions are shifted by one against the store's ({'; '.join(parts)}): "
        "a 0-based/1-based mix-up, or another reference? Fix the positions and convert it again")]


def _per_contig(plan: VariantPlan, below: float) -> list[str]:
    return [f"{c} {n.covered}/{n.store_sites}" for c, n in plan.contigs.items()
            if n.store_sites and n.covered / n.store_sites < below]


def _coverage(plan: VariantPlan, name: str, t: Thresholds) -> Finding:
    figures = (f"batch {name} covers {plan.covered} of the store's {plan.store_sites} sites "
               f"({percent(plan.site_coverage)}")
    lacking = plan.store_sites - plan.covered
    detail = [f"first at {', '.join(plan.examples.get('missing_filled', [])[:3])}"]
    low = _per_contig(plan, WARN_SITE_COVERAGE)
    if low:
        detail.append(f"per contig {_listed(low)}")
    loss = f": {lacking} would be filled with missing values ({'; '.join(detail)})"
    if plan.site_coverage < t.min_site_coverage:
        return _finding("site_coverage", "error",
                        f"{figures}; --min-site-coverage {t.min_site_coverage:g} needs "
                        f"{percent(t.min_site_coverage)}){loss}")
    if plan.site_coverage < WARN_SITE_COVERAGE:
        return _finding("site_coverage", "warning", f"{figures}){loss}")
    return _finding("site_coverage", "info", f"{figures})" + (loss if lacking else ""))


def _dropped(plan: VariantPlan, name: str, t: Thresholds) -> Finding:
    figures = (f"batch {name}: {plan.dropped} of its {plan.batch_records} records "
               f"({percent(plan.dropped_fraction)}) are at no store site and would be dropped")
    first = plan.examples.get("dropped", [])
    detail = [f"first at {', '.join(first[:3])}"] if first else []
    if plan.dropped_fraction > t.max_dropped_fraction:
        detail.append(f"--max-dropped-fraction {t.max_dropped_fraction:g} allows "
                      f"{percent(t.max_dropped_fraction)}")
        return _finding("dropped_records", "error", f"{figures} ({'; '.join(detail)})")
    severity = "warning" if plan.dropped_fraction > WARN_DROPPED_FRACTION else "info"
    return _finding("dropped_records", severity, figures + (f" ({detail[0]})" if detail else ""))


_HARMONISED = {
    "remapped": "site(s) whose alleles the batch lists in another order or subset, remapped",
    "split_merged": "multi-allelic site(s) split into several records, merged",
}


def _remapped(plan: VariantPlan, name: str) -> list[Finding]:
    out = []
    for key, label in _HARMONISED.items():
        n = getattr(plan, key)
        if n:
            shown = plan.examples.get(key, [])[:3]
            out.append(_finding(f"harmonised_{key}", "info",
                                f"batch {name}: harmonised: {n} {label}"
                                + (f" (e.g. {', '.join(shown)})" if shown else "")))
    return out


def _new_alleles(plan: VariantPlan, name: str, allowed: bool) -> Finding:
    first = plan.new_alleles[0]
    text = (f"batch {name}: {plan.num_new_alleles} new ALT allele(s) at {len(plan.new_alleles)} "
            f"store site(s), first at {first.site}: {','.join(first.alleles)}")
    if allowed:
        return _finding("new_alleles", "info", text + "; they are added to the store with the append")
    return _finding("new_alleles", "error",
                    text + "; the store's variant set is fixed: append with --allow-new-alleles "
                    "to add them")
