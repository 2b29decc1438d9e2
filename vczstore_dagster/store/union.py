"""A store's variant set from several variant sources (``init --variants A --variants B``): their
union, merged as ``bcftools merge -m none`` merges them, after checking that the sources are on
one reference (contigs named alike, the same contig lengths, positions not shifted by one)."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import numpy as np

from vczstore_dagster.store import contigs
from vczstore_dagster.store.errors import InvalidInputError

_CONTIG_LINE = re.compile(r"^##contig=<ID=([^,>]+)(?:.*?[<,]length=(\d+))?")


def union_of_variants(sources, tmp) -> pathlib.Path:
    """One sites-only VCF: the union of the sources' variant sets in genomic order, records
    merged by ``bcftools merge -m none`` (the same site from several sources is one record).
    The sources' FORMAT definitions are kept: they give the store its ``call_*`` fields."""
    bcftools = shutil.which("bcftools")
    if bcftools is None:
        raise InvalidInputError("init from several variant sources needs bcftools on the PATH")
    tmp = pathlib.Path(tmp)
    sites, formats, shapes = [], {}, []
    for i, source in enumerate(map(pathlib.Path, sources)):
        out = tmp / f"sites-{i}.vcf.gz"
        name = source.name
        if source.is_dir():
            plain = tmp / f"source-{i}.vcf"
            _vcz_sites(source, plain)
            source = plain
        elif not source.is_file():
            raise InvalidInputError(f"{source}: no such VCF file or VCZ directory")
        header = _run([bcftools, "view", "-h", source], source)
        for line in header.splitlines():
            if line.startswith("##FORMAT=<ID="):
                formats.setdefault(line.split(",", 1)[0], line)
        _run([bcftools, "view", "--no-version", "-G", "-Oz", "-o", out, source], source)
        _run([bcftools, "index", "-f", out], source)
        sites.append(out)
        shapes.append(_Shape(name, header, _run([bcftools, "query", "-f", r"%CHROM\t%POS\n", out],
                                                source)))
    for other in shapes[1:]:
        shapes[0].agrees_with(other)
    merged, union, header = tmp / "merged.vcf.gz", tmp / "union.vcf.gz", tmp / "formats.txt"
    _run([bcftools, "merge", "--no-version", "-m", "none", "-Oz", "-o", merged, *sites],
         "merging the variant sources")
    header.write_text("".join(line + "\n" for line in formats.values()))
    _run([bcftools, "annotate", "--no-version", "-h", header, "-Oz", "-o", union, merged],
         "merging the variant sources")
    _run([bcftools, "index", "-f", union], union)
    return union


class _Shape:
    """A variant source's contigs (header lengths) and positions per contig."""

    def __init__(self, name: str, header: str, positions: str):
        self.name = name
        self.lengths = {}
        for line in header.splitlines():
            m = _CONTIG_LINE.match(line)
            if m and m.group(2):
                self.lengths[m.group(1)] = int(m.group(2))
        by_contig: dict[str, list[int]] = {}
        for line in positions.splitlines():
            chrom, _, pos = line.partition("\t")
            by_contig.setdefault(chrom, []).append(int(pos))
        self.positions = {c: np.asarray(p, dtype=np.int64) for c, p in by_contig.items()}

    def agrees_with(self, other: _Shape) -> None:
        """Refuse two sources on different references, naming both and what differs."""
        both = f"variant sources {self.name} and {other.name}"
        renamed = contigs.aliases(list(self.positions), list(other.positions))
        if renamed:
            shown = ", ".join(f"{b} in {other.name} is {a} in {self.name}" for b, a in renamed[:5])
            raise InvalidInputError(f"{both} name contigs differently ({shown}); rename them alike "
                                    "(bcftools annotate --rename-chrs)")
        pairs = [(c, c) for c in self.lengths if c in other.lengths]
        conflicts = contigs.length_conflicts(self.lengths, other.lengths, pairs)
        if conflicts:
            c, _, a, b = conflicts[0]
            raise InvalidInputError(f"{both} are on different reference builds: contig {c} is "
                                    f"{a:,} bp in {self.name} and {b:,} bp in {other.name}")
        for c, ours in self.positions.items():
            theirs = other.positions.get(c)
            if theirs is None:
                continue
            hits = contigs.position_hits(ours, theirs)
            s = contigs.shift(hits, min(len(ours), len(theirs)))
            if s:
                raise InvalidInputError(
                    f"{both}: on {c} their positions match far better shifted by one ({hits[s]} of "
                    f"{len(ours)} sites of {self.name} have a record of {other.name} at POS{s:+d}, "
                    f"{hits[0]} at POS): a 0-based/1-based mix-up, or another reference?")


def _vcz_sites(path, out) -> None:
    from vcztools.retrieval import VczReader
    from vcztools.vcf_writer import write_vcf

    from vczstore_dagster.store.batch import open_batch

    batch = open_batch(path)
    with open(out, "w") as f, VczReader(batch.group) as reader:
        write_vcf(reader, f, no_version=True)


def _run(cmd, what) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise InvalidInputError(f"{what}: {proc.stderr.strip()[:300]}")
    return proc.stdout
