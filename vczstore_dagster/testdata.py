"""A small, deterministic VCF writer for examples, tests and benchmarks.

Every batch generated with the same ``sites_seed`` shares one variant set (the cohort's array or
imputation panel); batches differ in their samples. The data exercise what VCF Zarr must carry:
multi-allelic sites, missing and half-missing genotypes, phased and unphased calls, and FORMAT
fields of Integer, Float and String type with Number 1, ``.``, R and G.
"""

from __future__ import annotations

import dataclasses
import gzip
import pathlib

import numpy as np

CONTIGS = {"chr1": 10_000_000, "chr2": 8_000_000}
BASES = "ACGT"


@dataclasses.dataclass(frozen=True)
class Site:
    contig: str
    position: int
    ref: str
    alts: tuple[str, ...]
    id: str
    qual: float | None
    filter: str


def make_sites(num_variants: int, seed: int = 42) -> list[Site]:
    rng = np.random.default_rng(seed)
    per_contig = [num_variants - num_variants // 2, num_variants // 2]
    sites = []
    for (contig, length), n in zip(CONTIGS.items(), per_contig, strict=True):
        positions = np.sort(rng.choice(np.arange(1, length), size=n, replace=False))
        for pos in positions:
            ref = BASES[rng.integers(4)]
            others = [b for b in BASES if b != ref]
            n_alt = 1 if rng.random() < 0.8 else int(rng.integers(2, 4))
            alts = tuple(rng.permutation(others)[:n_alt])
            if rng.random() < 0.05:  # an indel allele
                alts = (*alts[:-1], ref + BASES[rng.integers(4)])
            vid = f"rs{rng.integers(1, 10**8)}" if rng.random() < 0.7 else "."
            qual = None if rng.random() < 0.1 else round(float(rng.uniform(10, 100)), 1)
            flt = "PASS" if rng.random() < 0.9 else "LowQual"
            sites.append(Site(contig, int(pos), ref, alts, vid, qual, flt))
    return sites


def sample_names(prefix: str, num_samples: int, start: int = 0) -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(start, start + num_samples)]


HEADER = """##fileformat=VCFv4.3
##source=vczstore_dagster.testdata
{contigs}##FILTER=<ID=PASS,Description="All filters passed">
##FILTER=<ID=LowQual,Description="Low quality">
##INFO=<ID=AC,Number=A,Type=Integer,Description="Allele count in genotypes">
##INFO=<ID=AN,Number=1,Type=Integer,Description="Total number of alleles in called genotypes">
##INFO=<ID=NS,Number=1,Type=Integer,Description="Number of samples with data">
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Read depth">
##FORMAT=<ID=GQ,Number=1,Type=Float,Description="Genotype quality">
##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Allelic depths">
##FORMAT=<ID=PL,Number=G,Type=Integer,Description="Phred-scaled genotype likelihoods">
##FORMAT=<ID=HQ,Number=.,Type=Integer,Description="Haplotype qualities">
##FORMAT=<ID=FT,Number=1,Type=String,Description="Sample filter">
"""


def write_vcf(
    path: str | pathlib.Path,
    samples: list[str],
    *,
    num_variants: int = 100,
    sites_seed: int = 42,
    seed: int = 1,
    sites: list[Site] | None = None,
    max_hq: int = 3,
    dp_max: int = 60,
    haploid_contigs: tuple[str, ...] = (),
    haploid_samples: tuple[str, ...] | None = None,
    split_multiallelic: bool = False,
) -> pathlib.Path:
    """Write a VCF (bgzip-free gzip if the name ends in .gz) for ``samples`` over the shared sites.

    ``sites`` replaces the shared sites (drop, add or reorder ALT alleles with it). Calls on
    ``haploid_contigs`` are haploid for ``haploid_samples`` (all samples when None), like chrY
    or chrX in males (PL then has one value per allele). ``split_multiallelic`` writes each
    multi-allelic site as one biallelic record per ALT allele, as ``bcftools norm -m-`` does.
    """
    path = pathlib.Path(path)
    sites = sites if sites is not None else make_sites(num_variants, sites_seed)
    rng = np.random.default_rng(seed)
    contigs = "".join(f"##contig=<ID={c},length={n}>\n" for c, n in CONTIGS.items())
    lines = [HEADER.format(contigs=contigs)]
    columns = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"
    lines.append(columns + ("\tFORMAT\t" + "\t".join(samples) if samples else "") + "\n")
    n = len(samples)
    for site in sites:
        n_alleles = 1 + len(site.alts)
        af = rng.dirichlet(np.ones(n_alleles) * 0.7)
        gts = rng.choice(n_alleles, size=(n, 2), p=af)
        phased = rng.random(n) < 0.5
        miss = rng.random((n, 2))
        cells = []
        ac = np.zeros(n_alleles, dtype=int)
        an = 0
        ns = 0
        for j in range(n):
            a = [str(x) for x in gts[j]]
            if miss[j, 0] < 0.03:
                a = [".", "."]
            elif miss[j, 0] < 0.05:
                a[1] = "."
            haploid = site.contig in haploid_contigs and (
                haploid_samples is None or samples[j] in haploid_samples)
            if haploid:
                a = a[:1]
            sep = "|" if phased[j] else "/"
            called = [int(x) for x in a if x != "."]
            for x in called:
                ac[x] += 1
            an += len(called)
            ns += bool(called)
            fields = [sep.join(a)]
            fields.append("." if rng.random() < 0.05 else str(int(rng.integers(0, dp_max))))
            fields.append("." if rng.random() < 0.05 else f"{rng.uniform(0, 99):.2f}")
            if rng.random() < 0.05:
                fields.append(".")
            else:
                fields.append(",".join(str(int(x)) for x in rng.integers(0, 30, n_alleles)))
            n_g = n_alleles * (n_alleles + 1) // 2
            if rng.random() < 0.05:
                fields.append(".")
            else:
                pl = rng.integers(0, 200, n_g)
                fields.append(",".join(str(int(x)) for x in pl[: n_alleles if haploid else n_g]))
            k = int(rng.integers(0, max_hq + 1))
            fields.append("." if k == 0 else ",".join(str(int(x)) for x in rng.integers(0, 50, k)))
            fields.append(rng.choice(["PASS", "LowDP", "."]))
            cells.append(fields)
        records = [(site.alts, ac[1:], cells)]
        if split_multiallelic and len(site.alts) > 1:
            records = [((alt,), ac[i : i + 1], [_split_cell(c, i) for c in cells])
                       for i, alt in enumerate(site.alts, start=1)]
        qual = "." if site.qual is None else f"{site.qual}"
        for alts, alt_counts, record_cells in records:
            info = f"AC={','.join(str(x) for x in alt_counts)};AN={an};NS={ns}"
            lines.append(
                f"{site.contig}\t{site.position}\t{site.id}\t{site.ref}\t{','.join(alts)}\t{qual}"
                f"\t{site.filter}\t{info}"
                + ("\tGT:DP:GQ:AD:PL:HQ:FT\t" + "\t".join(":".join(c) for c in record_cells)
                   if samples else "") + "\n"
            )
    text = "".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def write_sites_vcf(path: str | pathlib.Path, *, num_variants: int = 100, sites_seed: int = 42,
                    sites: list[Site] | None = None):
    """A VCF of the shared sites with no samples: a variants-only source for ``init --variants``."""
    return write_vcf(path, [], num_variants=num_variants, sites_seed=sites_seed, sites=sites)


def _split_cell(fields: list[str], alt: int) -> list[str]:
    """One sample's FORMAT values for the biallelic record of ALT number ``alt``: other ALTs
    become REF in GT; AD keeps REF and this ALT; PL keeps the genotypes of REF and this ALT."""
    gt, dp, gq, ad, pl, hq, ft = fields
    sep = "|" if "|" in gt else "/"
    alleles = gt.replace("|", "/").split("/")
    gt = sep.join("." if x == "." else ("1" if int(x) == alt else "0") for x in alleles)
    if ad != ".":
        values = ad.split(",")
        ad = f"{values[0]},{values[alt]}"
    if pl != ".":
        values = pl.split(",")
        if len(alleles) == 1:  # haploid: one value per allele
            pl = f"{values[0]},{values[alt]}"
        else:
            pl = ",".join(values[k] for k in (0, alt * (alt + 1) // 2, alt * (alt + 1) // 2 + alt))
    return [gt, dp, gq, ad, pl, hq, ft]
