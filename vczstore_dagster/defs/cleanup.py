"""Files holding sample IDs that must not stay behind, and who deletes them.

- ``vcz_store[B]`` deletes batch B's inbox folder and staged copy once B is in the store.
- ``dismiss_batch`` deletes a refused batch's inbox folder and staged copy and its partition.
- ``sample_withdrawals[W]`` replaces request file ``W.txt`` by a receipt without IDs, and deletes
  every batch in the inbox or the staging area that still holds a withdrawn sample (such a batch
  could never be appended again); ``purge_store`` reports them, and deletes them when asked.
"""

from __future__ import annotations

import shutil

import dagster as dg

from vczstore_dagster.defs.partitions import batches
from vczstore_dagster.defs.privacy import call_engine
from vczstore_dagster.defs.resources import InboxResource, StagingResource
from vczstore_dagster.store.ledger import read_ledger
from vczstore_dagster.store.leftovers import find_leftovers


def delete_batch(context, inbox: InboxResource, staging: StagingResource, batch_id: str, *,
                 keep_partition: bool = False) -> dict:
    """Delete batch B's inbox folder and staged copy, and its partition of ``batches`` (unless
    ``keep_partition``: a batch in the store keeps its history)."""
    in_inbox = inbox.delete(batch_id)
    staged = staging.batch_dir(batch_id)
    in_staging = staged.exists()
    shutil.rmtree(staged, ignore_errors=True)
    partition = not keep_partition and context.instance.has_dynamic_partition(batches.name, batch_id)
    if partition:
        context.instance.delete_dynamic_partition(batches.name, batch_id)
    return {"inbox_folder_deleted": in_inbox, "staged_copy_deleted": in_staging,
            "partition_removed": partition}


def leftover_batches(context, opened, inbox: InboxResource, staging: StagingResource, *,
                     delete: bool) -> dict:
    """Batches in the inbox or the staging area that still hold a withdrawn sample: named with
    counts in the metadata, and deleted (files and partition) when ``delete``."""
    url, options = inbox.zarr_location()
    found = {}
    for where, root, opts in (("inbox", url, options), ("staging", staging.path, None)):
        for leftover in call_engine(f"searching the {where} for withdrawn samples",
                                    find_leftovers, opened, root, storage_options=opts):
            found.setdefault(leftover.name, {})[where] = leftover.withdrawn
    in_store = set(read_ledger(opened.readonly_group()).batch_ids())
    rows = []
    for name, where in sorted(found.items()):
        if delete:
            delete_batch(context, inbox, staging, name, keep_partition=name in in_store)
        rows.append(f"| {name} | {max(where.values())} | {', '.join(where)} | "
                    f"{'deleted' if delete else 'kept'} |")
    if found:
        context.log.warning(f"{len(found)} batch(es) still held withdrawn samples: "
                            f"{', '.join(sorted(found))} ({'deleted' if delete else 'kept'})")
    table = "\n".join(["| batch | withdrawn samples | where | files |", "|---|---:|---|---|", *rows])
    return {"leftover_batches": len(found),
            "leftover_batch_names": dg.MetadataValue.text(", ".join(sorted(found)) or "none"),
            "leftover_withdrawn_samples": sum(max(w.values()) for w in found.values()),
            "leftovers": dg.MetadataValue.md(table if found else "none"),
            "leftovers_deleted": bool(found) and delete}
