"""What a batch folder in the inbox holds, as the sensor and ``incoming_batch`` see it."""

from __future__ import annotations

import dataclasses

from vczstore_dagster.defs.resources import FolderResource
from vczstore_dagster.store.leftovers import VCF_SUFFIXES

READY_MARKER = "_READY"
INDEX_SUFFIXES = (".tbi", ".csi")


@dataclasses.dataclass(frozen=True)
class BatchFolder:
    name: str
    ready: bool
    vcfs: tuple[str, ...]  # file names inside the folder
    vcz: str | None  # folder name of the one VCZ, if the batch is a VCZ
    problem: str | None  # why the folder is not an ingestible batch

    @property
    def kind(self) -> str:
        return "vcz" if self.vcz else "vcf"


def is_vcf(name: str) -> bool:
    return name.endswith(VCF_SUFFIXES)


def describe_batch(inbox: FolderResource, name: str) -> BatchFolder:
    entries = inbox.entries(name)
    names = {e["name"] for e in entries}
    vcfs = tuple(e["name"] for e in entries if e["type"] == "file" and is_vcf(e["name"]))
    vczs = tuple(e["name"] for e in entries if e["type"] == "directory" and e["name"].endswith(".vcz"))
    problem = None
    if vcfs and vczs:
        problem = "holds both VCF files and a VCZ"
    elif len(vczs) > 1:
        problem = f"holds {len(vczs)} VCZs (one batch is one VCZ)"
    elif not vcfs and not vczs:
        problem = "holds no VCF file (.vcf, .vcf.gz, .bcf) and no .vcz"
    return BatchFolder(
        name=name,
        ready=READY_MARKER in names,
        vcfs=vcfs,
        vcz=vczs[0] if len(vczs) == 1 else None,
        problem=problem,
    )


def batch_folders(inbox: FolderResource) -> list[str]:
    """Names of the subfolders of the inbox (files at its top level are ignored)."""
    return [e["name"] for e in inbox.entries() if e["type"] == "directory"]
