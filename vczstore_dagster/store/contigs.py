"""Signs that a batch was made against another reference than the store: contigs named another
way (``chr22`` / ``22``, ``chrM`` / ``MT``), contig lengths that differ (another build), and
positions that match the store's far better shifted by one (a 0-based / 1-based mix-up).
Pure functions over names, lengths and counts, shared by the batch plan and ``init --variants``.
"""

from __future__ import annotations

import numpy as np

from vczstore_dagster.store import schema

# Positions "match far better" shifted by one when the shifted matches are more than twice the
# unshifted ones, at least half the records compared, and at least this many.
SHIFT_MIN_SITES = 3
SHIFTS = (1, -1)


def canonical(name: str) -> str:
    """A contig name without its ``chr`` prefix, the mitochondrion always ``MT``."""
    bare = name[3:] if name[:3].lower() == "chr" else name
    return "MT" if bare.upper() in ("M", "MT") else bare


def aliases(known, others) -> list[tuple[str, str]]:
    """``(other, known)`` for each name of ``others`` that is not in ``known`` but names one of
    its contigs another way."""
    by_canonical = {canonical(k): k for k in known}
    known = set(known)
    return [(o, by_canonical[canonical(o)]) for o in others
            if o not in known and canonical(o) in by_canonical]


def lengths(group) -> dict[str, int]:
    """Contig name → length from the VCF header the group was made from (known lengths only)."""
    if "contig_length" not in group:
        return {}
    names = schema.strings(group["contig_id"][...])
    values = np.asarray(group["contig_length"][...]).astype(np.int64)
    return {str(n): int(v) for n, v in zip(names, values, strict=True) if v > 0}


def length_conflicts(ours: dict, theirs: dict, pairs) -> list[tuple[str, str, int, int]]:
    """``(our name, their name, our length, their length)`` for each pair of names for the same
    contig whose known lengths differ."""
    return [(a, b, ours[a], theirs[b]) for a, b in pairs
            if a in ours and b in theirs and ours[a] != theirs[b]]


def position_hits(ours, theirs) -> dict[int, int]:
    """How many of ``ours`` (positions) ``theirs`` has at the same position, and one after or
    before: ``{0: n, 1: n, -1: n}``."""
    ours = np.asarray(ours, dtype=np.int64)
    theirs = np.asarray(theirs, dtype=np.int64)
    return {s: int(np.isin(ours + s, theirs).sum()) for s in (0, *SHIFTS)}


def shift(hits: dict[int, int], compared: int) -> int:
    """The shift (1 or -1) at which positions match far better than unshifted; 0 when none."""
    for s in SHIFTS:
        n = hits.get(s, 0)
        if n > 2 * hits.get(0, 0) and n >= max(SHIFT_MIN_SITES, compared / 2):
            return s
    return 0
