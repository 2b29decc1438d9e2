"""VCF files as bio2zarr needs them (bgzipped and indexed), and why one cannot be read."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

from vczstore_dagster.store.errors import InvalidInputError


def indexed(vcf: pathlib.Path, tmp: pathlib.Path) -> pathlib.Path:
    """bio2zarr needs bgzipped, indexed VCFs: make a copy that is, when the input is not."""
    if any(pathlib.Path(str(vcf) + ext).exists() for ext in (".csi", ".tbi")):
        return vcf
    bcftools = shutil.which("bcftools")
    if bcftools is None:
        raise InvalidInputError(f"{vcf}: not indexed, and bcftools is not installed to index it")
    target = tmp / (vcf.name.removesuffix(".gz").removesuffix(".vcf") + ".vcf.gz")
    for cmd in ([bcftools, "view", "--no-version", "-Oz", "-o", str(target), str(vcf)],
                [bcftools, "index", "-f", str(target)]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise InvalidInputError(f"{vcf}: cannot be read as VCF: {proc.stderr.strip()[:300]}")
    return target


def unreadable(vcfs, exc) -> str:
    """Why VCF files cannot be read: htslib's own words (bcftools reads each file; bio2zarr's
    exception often says nothing), else bio2zarr's."""
    bcftools = shutil.which("bcftools")
    for vcf in vcfs if bcftools else ():
        proc = subprocess.run([bcftools, "view", "--no-version", "-Ou", "-o", os.devnull, str(vcf)],
                              capture_output=True, text=True)
        said = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        if proc.returncode != 0 or any(line.startswith("[E::") for line in said):
            return f"{vcf}: cannot be read as VCF: {'; '.join(said[:3])[:400]}"
    reason = str(exc).strip() or type(exc).__name__
    return f"{', '.join(map(str, vcfs))}: cannot be read as VCF ({reason})"
