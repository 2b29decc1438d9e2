"""A batch's sample IDs: present, unique, printable, new to the store and never withdrawn.

A sample ID goes into VCF headers, where a TAB or a newline would split it and make the header
and the records disagree: any control character is refused (a carriage return at the end is the
mark of a VCF written with Windows line endings). Findings that name a sample carry a
``safe_message`` without it, for logs and Dagster.
"""

from __future__ import annotations

import collections
import unicodedata

import numpy as np

from vczstore_dagster.store import schema
from vczstore_dagster.store.findings import Finding
from vczstore_dagster.store.ledger import read_ledger

_NAMED = {"\t": "TAB", "\n": "newline", "\r": "carriage return"}


def control_characters(sample_id: str) -> list[str]:
    """The control characters in an ID, named (TAB, newline, U+0001...)."""
    found = dict.fromkeys(c for c in sample_id if unicodedata.category(c) == "Cc")
    return [_NAMED.get(c, f"U+{ord(c):04X}") for c in found]


def printable(sample_id: str) -> str:
    """An ID with its control characters escaped, safe to print on one line."""
    return "".join(c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) == "Cc"
                   else c for c in sample_id)


def batch_sample_findings(batch) -> list[Finding]:
    """What is wrong with a batch's samples on their own: none at all, an empty, a duplicated
    or an unprintable ID."""
    name = batch.name
    ids = batch.sample_ids()
    if not len(ids):
        return [Finding("no_samples", "error", "samples",
                        f"batch {name} has no samples: there is nothing to append")]
    out = []
    empty = np.flatnonzero(ids == "")
    if len(empty):
        out.append(Finding("sample_id_empty", "error", "samples",
                           f"batch {name}: {len(empty)} sample(s) have an empty id "
                           f"(first at batch position {int(empty[0])})"))
    bad = [(i, s, control_characters(s)) for i, s in enumerate(ids) if not s.isprintable()]
    bad = [b for b in bad if b[2]]
    if bad:
        i, s, chars = bad[0]
        hint = (" (a VCF written with Windows line endings? convert it with dos2unix first)"
                if chars == ["carriage return"] and s.endswith("\r") else "")
        more = f" ({len(bad)} such samples)" if len(bad) > 1 else ""
        what = f"a control character ({', '.join(chars)}) in its ID"
        out.append(Finding("sample_id_control", "error", "samples",
                           f"batch {name}: sample '{printable(s)}' (batch position {i}) has {what}"
                           f"{more}{hint}",
                           f"batch {name}: the sample at batch position {i} has {what}{more}{hint}"))
    counts = collections.Counter(ids[ids != ""])
    dups = sorted(s for s, c in counts.items() if c > 1)
    if dups:
        out.append(Finding("sample_id_duplicate", "error", "samples",
                           f"batch {name}: sample {printable(dups[0])} appears {counts[dups[0]]} times "
                           "in the batch" + (f" ({len(dups)} duplicated ids in all)" if len(dups) > 1 else ""),
                           f"batch {name}: {len(dups)} sample id(s) appear more than once in the batch"))
    return out


def store_sample_findings(group, batch) -> list[Finding]:
    """Samples the store has, or had: already in it, or withdrawn from it."""
    out = []
    name = batch.name
    ids = batch.sample_ids()
    existing = set(schema.strings(group["sample_id"][...])) - {""}
    clash = sorted(set(ids) & existing)
    if clash:
        out.append(Finding("sample_id_in_store", "error", "samples",
                           f"batch {name}: sample {printable(clash[0])} is already in the store"
                           + (f" ({len(clash)} such samples)" if len(clash) > 1 else ""),
                           f"batch {name}: {len(clash)} sample(s) are already in the store"))
    ledger = read_ledger(group)
    if ledger.withdrawn:
        withdrawn = set(ledger.withdrawn)
        hits = [s for s in ids if ledger.hash_sample(s) in withdrawn]
        if hits:
            out.append(Finding("sample_id_withdrawn", "error", "samples",
                               f"batch {name}: sample {printable(hits[0])} was withdrawn from the "
                               "store and cannot be appended again"
                               + (f" ({len(hits)} withdrawn samples in the batch)" if len(hits) > 1 else ""),
                               f"batch {name}: {len(hits)} sample(s) were withdrawn from the store and "
                               "cannot be appended again"))
    return out
