"""The store (or a release) as VCF text, through vcztools' reader on the session at that ref."""

from __future__ import annotations


def write_vcf(store, output, *, at: str | None = None) -> None:
    """Write VCF to ``output`` (a path or a text file); removed samples are not shown."""
    from vcztools.retrieval import VczReader
    from vcztools.vcf_writer import write_vcf as vcztools_write_vcf

    with VczReader(store.readonly_group(at)) as reader:
        vcztools_write_vcf(reader, output, no_version=True)
