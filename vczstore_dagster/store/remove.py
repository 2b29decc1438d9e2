"""Remove samples whose consent was withdrawn, in one commit.

A removed sample keeps its slot (so sample indexes and chunk columns do not move) but holds nothing:
``sample_id`` "", every ``call_*`` value missing, ``call_genotype_mask`` True and
``call_genotype_phased`` False. Only the sample-chunk columns that hold removed samples are
rewritten, each block once, whatever the number of samples removed, at the fast level of the
store's codec (:mod:`~vczstore_dagster.store.recompress`; the ledger lists those columns). The IDs
go into the withdrawn registry as salted hashes, and header lines that mention them are scrubbed
from the attributes.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import time

import numpy as np

from vczstore_dagster.store import schema
from vczstore_dagster.store.blocks import array_blocks, trailing_chunks
from vczstore_dagster.store.chunkcodec import rewrite_chunks
from vczstore_dagster.store.cluster import Cluster, ClusterWork, connect, run_work
from vczstore_dagster.store.errors import AuditError, InvalidInputError
from vczstore_dagster.store.ledger import read_ledger, write_ledger
from vczstore_dagster.store.recompress import fast_level, note_fast_columns, writes_faster
from vczstore_dagster.store.transaction import commit

SCRUBBED = "[withdrawn]"
log = logging.getLogger(__name__)


@dataclasses.dataclass
class RemoveResult:
    num_removed: int
    snapshot_id: str | None
    columns_rewritten: int
    chunks_rewritten: int
    attributes_scrubbed: int
    withdrawn_total: int
    seconds: float
    cluster: ClusterWork | None = None  # what ran on a Dask cluster


def parse_sample_list(text: str) -> list[str]:
    """One sample ID per line; blank lines and ``#`` comments ignored; order kept, repeats dropped."""
    ids = (line.strip() for line in text.splitlines())
    return list(dict.fromkeys(s for s in ids if s and not s.startswith("#")))


def remove_samples(store, sample_ids, *, progress: bool = False,
                   dask_scheduler: str | Cluster | None = None) -> RemoveResult:
    """``dask_scheduler``: blank the chunk columns on that Dask cluster (an address, or ``local``)."""
    t0 = time.perf_counter()
    requested = list(dict.fromkeys(str(s).strip() for s in sample_ids))
    if not requested or any(s == "" for s in requested):
        raise InvalidInputError("remove needs at least one non-empty sample ID")
    head = store.readonly_group()
    locate(head, requested, read_ledger(head))  # refuse before anything is written

    def operation(group, parent):
        ledger = read_ledger(group)
        indexes = locate(group, requested, ledger)
        log.info("removing %d samples from %d sample-chunk column(s)", len(indexes),
                 len(np.unique(indexes // schema.samples_chunk_size(group))))
        blanked = blank_samples(group, indexes, progress=progress, cluster=cluster)
        scrubbed = scrub_attributes(group, requested)
        note_fast_columns(ledger, blanked.fast_level_columns)
        ledger.withdrawn = sorted(set(ledger.withdrawn) | {ledger.hash_sample(s) for s in requested})
        ledger.withdrawals += len(requested)
        ledger.stale_info_fields = sorted(
            set(ledger.stale_info_fields) | {n for n in ("variant_AC", "variant_AN", "variant_AF",
                                                         "variant_NS", "variant_DP") if n in group}
        )
        write_ledger(group, ledger)
        return indexes, len(blanked.columns), blanked.chunks, scrubbed, len(ledger.withdrawn)

    def audit(after, result):
        indexes = result[0]
        ids = schema.strings(after["sample_id"][...])
        if np.any(ids[indexes] != ""):
            raise AuditError("audit: a removed sample still has its id")
        if set(ids) & set(requested):
            raise AuditError("audit: a removed sample id is still in the store")

    with connect(dask_scheduler) as cluster:
        done = commit(store, operation, audit=audit, message=f"remove {len(requested)} samples",
                      metadata={"operation": "remove", "num_samples": len(requested)})
        ran = cluster.take_work() if cluster is not None else None
    _, columns, chunks, scrubbed, total = done.result
    return RemoveResult(len(requested), done.snapshot_id, columns, chunks, scrubbed, total,
                        time.perf_counter() - t0, ran)


def locate(group, requested: list[str], ledger) -> np.ndarray:
    """Store indexes of the requested samples; an unknown or already removed one is an error."""
    ids = schema.strings(group["sample_id"][...])
    position = {s: i for i, s in enumerate(ids) if s}
    withdrawn = set(ledger.withdrawn)
    for s in requested:
        if s in position:
            continue
        if ledger.hash_sample(s) in withdrawn:
            raise InvalidInputError(f"sample {s} was already removed from the store")
        raise InvalidInputError(f"sample {s} is not in the store")
    return np.array(sorted(position[s] for s in requested), dtype=np.int64)


@dataclasses.dataclass
class Blanked:
    columns: list[int]  # the sample-chunk columns rewritten
    chunks: int
    fast_level_columns: list[int]  # the same, when some array's level was lowered; else []


def blank_samples(group, indexes: np.ndarray, *, progress: bool = False,
                  cluster: Cluster | None = None) -> Blanked:
    """Overwrite the samples at ``indexes`` with missing values, one pass per touched column
    (on ``cluster`` when given), writing at the fast level. The caller records
    ``fast_level_columns`` in the ledger (``recompress.note_fast_columns``)."""
    s = schema.samples_chunk_size(group)
    columns = [int(c) for c in np.unique(indexes // s)]
    blocks, faster = [], False
    for name, array in schema.sample_arrays(group).items():
        axis = schema.sample_axis(array)
        fast = fast_level(array)
        faster = faster or writes_faster(array)
        for c in columns:
            lo, hi = c * s, min((c + 1) * s, array.shape[axis])
            local = indexes[(indexes >= lo) & (indexes < hi)] - lo
            blank = functools.partial(_blank, local=local, value=_removed_value(name, array))
            blocks += array_blocks(fast, axis, lo, hi, blank)
    chunks, _ = run_work(blocks, cluster=cluster, progress="remove" if progress else None)
    return Blanked(columns, chunks, columns if faster else [])


def _blank(array, samples, variants, *, local, value) -> int:
    def blank(values):
        values[:, local] = value

    written = rewrite_chunks(array, samples, variants, blank)
    if written is not None:
        return written
    if variants is None:
        block = np.asarray(array[samples])
        block[local] = value
        array[samples] = block
        return 1
    block = np.asarray(array[variants, samples])
    block[:, local] = value
    array[variants, samples] = block
    return trailing_chunks(array)


def _removed_value(name, array):
    if name == "sample_id":
        return ""
    if name == "call_genotype_mask":
        return True
    if name == "call_genotype_phased":
        return False
    return schema.missing_value(array)


def scrub_attributes(group, sample_ids) -> int:
    """Drop VCF header lines (and any other attribute strings) that mention a removed sample."""
    ids = [s for s in sample_ids if s]
    pattern = re.compile("|".join(rf"(?<![\w.-]){re.escape(s)}(?![\w.-])" for s in ids))
    count = 0

    def mentions(value) -> bool:
        text = value if isinstance(value, str) else repr(value)
        return pattern.search(text) is not None

    def clean(value):
        nonlocal count
        if isinstance(value, list):
            kept = []
            for item in value:
                if mentions(item):
                    count += 1
                    continue
                kept.append(clean(item))
            return kept
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, str) and mentions(value):
            count += 1
            value = pattern.sub(SCRUBBED, value)
        return value

    nodes = [group] + [a for _, a in group.arrays()]
    for node in nodes:
        attrs = dict(node.attrs)
        if not any(mentions(v) for v in attrs.values()):
            continue
        node.attrs.put(clean(attrs))
    return count
