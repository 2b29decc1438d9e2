"""Benchmark data: msprime genotypes plus LRR/BAF, as a VCF and as batch VCZs, cached on disk.

Writing the full size as VCF text would take ~15 GB, so the batches are written as VCZs directly:
a small real VCF (``vcf_samples`` samples over the same variants) is converted with bio2zarr, and
that conversion is the template for every batch: the same arrays, dimensions, dtypes, codecs and
attributes, with the samples dimension resized and filled from the simulation. The variant arrays
are copied from the template unchanged, so every batch has exactly the layout ``vcf2zarr`` gives.

Everything is built once into ``benchmarks/.cache/<size>/`` (an interrupted build leaves a
``*.partial`` that the next run removes) and reused by later runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import warnings

import numpy as np

CACHE = pathlib.Path(__file__).resolve().parent / ".cache"
DATA_VERSION = 1  # bump to regenerate every cache
CONTIG = "chr1"
MISSING_GT_RATE = 0.002
LRR_SD = 0.2
BAF_SD = {0: 0.03, 1: 0.05, 2: 0.03}
# The "re-encode everything" batch comes from another tool: another sample chunking and codec.
FOREIGN_CODEC = {"cname": "lz4", "clevel": 5}
FAST_FLOAT_CODEC = "zstd:1"  # ``init --float-compression``: the cheaper float codec's rows


@dataclasses.dataclass(frozen=True)
class Size:
    name: str
    samples_per_batch: int  # two batches of this many samples
    num_variants: int
    samples_chunk: int
    variants_chunk: int
    vcf_samples: int  # samples in the real VCF (the convert benchmark and the layout template)
    sequence_length: float  # simulated; trimmed to the first num_variants biallelic sites
    unaligned_short: int  # the unaligned store holds batch 1 less this many samples
    reencode_samples_chunk: int  # the "re-encode everything" batch's sample chunk size
    runs: int  # runs of each operation
    heavy_runs: int  # runs of operations that re-encode chunk columns (minutes each at full size)
    reencode_all_runs: int  # runs of the append that re-encodes the whole batch
    spread_removal: bool  # also remove 100 samples spread over every column (rewrites everything)
    convert_runs: int  # runs of the VCF conversions (minutes each at full size)

    @property
    def num_individuals(self) -> int:
        return 2 * self.samples_per_batch + self.vcf_samples


QUICK = Size("quick", 500, 10_000, 100, 1_000, 100, 5e6, 5, 80, 3, 3, 3, True, 3)
FULL = Size("full", 5_000, 100_000, 1_000, 10_000, 100, 32e6, 50, 800, 3, 2, 1, False, 1)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Dataset:
    """Paths of the cached inputs for one size; ``ensure()`` builds what is missing."""

    def __init__(self, size: Size, root: pathlib.Path = CACHE):
        self.size = size
        self.dir = root / size.name
        self.genotypes = self.dir / "genotypes.npy"  # (variants, haplotypes) int8
        self.sites = self.dir / "sites.npz"
        self.vcf = self.dir / "vcf-batch.vcf.gz"
        self.template = self.dir / "template.vcz"  # bio2zarr's conversion of self.vcf
        self.batch1 = self.dir / "batch1.vcz"
        self.batch2 = self.dir / "batch2.vcz"
        self.batch2_offset = self.dir / "batch2-offset.vcz"  # laid out on the unaligned store's grid
        self.batch2_rechunked = self.dir / "batch2-rechunked.vcz"  # other sample chunks and codec
        self.store_b1 = self.dir / "store-b1"  # Icechunk store initialised from batch 1
        self.store_b12 = self.dir / "store-b12"  # ... with batch 2 appended
        self.store_unaligned = self.dir / "store-unaligned"  # batch 1 less a few samples
        # The same with FAST_FLOAT_CODEC for the float fields (stores made with --float-compression)
        self.fast = {name: self.dir / f"{name}-{FAST_FLOAT_CODEC.replace(':', '')}" for name in
                     ("store-b1", "store-unaligned", "batch2.vcz", "batch2-offset.vcz")}
        self.store_purge = self.dir / "store-purge"  # b12, release tagged, then 1 sample removed
        self.meta = self.dir / "dataset.json"

    # ------------------------------------------------------------------ sample identities
    def batch_samples(self, which: str) -> tuple[list[int], list[str]]:
        """Individuals (rows of the simulation) and sample ids of a batch."""
        n = self.size.samples_per_batch
        if which == "batch1":
            idx = list(range(0, n))
        elif which == "batch1-short":
            idx = list(range(0, n - self.size.unaligned_short))
        elif which == "batch2":
            idx = list(range(n, 2 * n))
        elif which == "vcf":
            idx = list(range(2 * n, 2 * n + self.size.vcf_samples))
        else:
            raise ValueError(which)
        prefix = "V" if which == "vcf" else "S"
        return idx, [f"{prefix}{i:06d}" for i in idx]

    def sample_id(self, store_index: int) -> str:
        """The id of the sample at ``store_index`` of store-b12 (batch 1 then batch 2)."""
        return f"S{store_index:06d}"

    # ------------------------------------------------------------------ build
    def artifacts(self) -> dict:
        """name → (path, build, what it needs)."""
        s = self.size
        return {
            "genotypes": (self.genotypes, self._simulate, []),
            "vcf": (self.vcf, self._write_vcf, ["genotypes"]),
            "template": (self.template, self._convert_template, ["vcf"]),
            "batch1": (self.batch1, lambda out: self._write_batch(out, "batch1"), ["template"]),
            "batch2": (self.batch2, lambda out: self._write_batch(out, "batch2"), ["template"]),
            "batch2_rechunked": (self.batch2_rechunked, lambda out: self._write_batch(
                out, "batch2", samples_chunk=s.reencode_samples_chunk, codec=FOREIGN_CODEC),
                ["template"]),
            "batch2_offset": (self.batch2_offset, lambda out: self._write_batch(
                out, "batch2", offset=self.unaligned_offset), ["template"]),
            "store_b1": (self.store_b1, lambda out: _engine_init(out, self.batch1), ["batch1"]),
            "store_b12": (self.store_b12, self._build_b12, ["store_b1", "batch2"]),
            "store_unaligned": (self.store_unaligned, self._build_unaligned, ["batch1"]),
            "store_purge": (self.store_purge, self._build_purge_store, ["store_b12"]),
            "store_b1_fast": (self.fast["store-b1"], lambda out: _engine_init(
                out, self.batch1, FAST_FLOAT_CODEC), ["batch1"]),
            "store_unaligned_fast": (self.fast["store-unaligned"], lambda out: self._build_unaligned(
                out, FAST_FLOAT_CODEC), ["batch1"]),
            "batch2_fast": (self.fast["batch2.vcz"], lambda out: _recode_floats(
                self.batch2, out, FAST_FLOAT_CODEC), ["batch2"]),
            "batch2_offset_fast": (self.fast["batch2-offset.vcz"], lambda out: _recode_floats(
                self.batch2_offset, out, FAST_FLOAT_CODEC), ["batch2_offset"]),
        }

    @property
    def unaligned_offset(self) -> int:
        return (self.size.samples_per_batch - self.size.unaligned_short) % self.size.samples_chunk

    def ensure(self, needs=None) -> None:
        """Build the named artifacts (default: all) and what they need, unless cached. One build at
        a time (a lock file in the cache); a run whose artifacts all exist takes no lock."""
        import fcntl

        table = self.artifacts()
        names = list(needs) if needs is not None else list(table)
        if not self.missing(names):
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".build.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for partial in self.dir.glob("*.partial"):
                shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink()
            for stale in self.dir.glob("*.lock"):
                if stale.name not in (".build.lock", ".run.lock"):
                    stale.unlink()
            if self.meta.exists() and not self._current():
                log(f"cache {self.dir} is from another data version: rebuilding")
                for p in self.dir.iterdir():
                    if p.name != ".build.lock":
                        shutil.rmtree(p) if p.is_dir() else p.unlink()
            self.meta.write_text(json.dumps({"version": DATA_VERSION,
                                             "size": dataclasses.asdict(self.size)}))
            for name in names:
                self._build(name, table)

    def missing(self, needs=None) -> list[str]:
        """The named artifacts (default: all) that ``ensure`` would have to build."""
        table = self.artifacts()
        names = list(needs) if needs is not None else list(table)
        if not self._current():
            return names
        return [n for n in names if not table[n][0].exists()]

    def _current(self) -> bool:
        return self.meta.exists() and json.loads(self.meta.read_text()).get("version") == DATA_VERSION

    def _build(self, name: str, table: dict) -> None:
        path, build, deps = table[name]
        if path.exists():
            return
        for dep in deps:
            self._build(dep, table)
        t0 = time.perf_counter()
        log(f"building {path.relative_to(self.dir.parent.parent)}")
        partial = path.with_name(path.name + ".partial")
        build(partial)
        os.replace(partial, path)
        for lock in self.dir.glob("*.partial.lock"):
            lock.unlink()
        log(f"  built in {time.perf_counter() - t0:.1f} s ({_du(path) / 1e6:.0f} MB)")

    def _simulate(self, out: pathlib.Path) -> None:
        """msprime: ``num_individuals`` diploids, the first ``num_variants`` biallelic sites."""
        import msprime

        s = self.size
        ts = msprime.sim_ancestry(samples=s.num_individuals, population_size=10_000,
                                  sequence_length=s.sequence_length, recombination_rate=1e-8,
                                  random_seed=1)
        ts = msprime.sim_mutations(ts, rate=1e-8, random_seed=2)
        biallelic = np.array([len(site.mutations) == 1 for site in ts.sites()], dtype=bool)
        keep = np.flatnonzero(biallelic)[: s.num_variants]
        if len(keep) < s.num_variants:
            raise RuntimeError(f"simulation gave {len(keep)} biallelic sites; need {s.num_variants}")
        ts = ts.delete_sites(np.setdiff1d(np.arange(ts.num_sites), keep))
        log(f"  simulated {ts.num_individuals} individuals, kept {ts.num_sites} biallelic sites")
        positions = ts.sites_position.astype(np.int64) + 1
        ref = np.array([site.ancestral_state for site in ts.sites()])
        alt = np.array([site.mutations[0].derived_state for site in ts.sites()])
        np.savez(self.sites, position=positions, ref=ref, alt=alt,
                 contig_length=int(s.sequence_length))
        # Haplotypes of individual i are columns 2i and 2i+1 (msprime lists samples that way).
        gt = np.lib.format.open_memmap(out, mode="w+", dtype=np.int8,
                                       shape=(ts.num_sites, ts.num_samples))
        for k, var in enumerate(ts.variants(copy=False)):
            gt[k] = var.genotypes
        gt.flush()
        # np.save-compatible file written under the .partial name: keep the .npy suffix readable
        del gt

    def _load(self):
        # np.load needs the real name, which exists once the step finished
        gt = np.load(self.genotypes, mmap_mode="r")
        sites = np.load(self.sites)
        return gt, sites

    def block(self, gt, v0: int, v1: int, individuals: list[int], seed: int):
        """Genotypes (v, n, 2) int8 with a little missingness, and LRR/BAF (v, n) float32."""
        cols = np.empty(2 * len(individuals), dtype=np.int64)
        ind = np.asarray(individuals)
        cols[0::2], cols[1::2] = 2 * ind, 2 * ind + 1
        lo, hi = cols.min(), cols.max() + 1
        g = np.asarray(gt[v0:v1, lo:hi])[:, cols - lo].reshape(v1 - v0, len(individuals), 2)
        g = g.astype(np.int8, copy=True)
        rng = np.random.default_rng([seed, v0])
        missing = rng.random(g.shape[:2]) < MISSING_GT_RATE
        dosage = g.sum(axis=2)
        g[missing] = -1
        lrr = rng.normal(0.0, LRR_SD, size=dosage.shape).astype(np.float32)
        sd = np.where(dosage == 1, BAF_SD[1], BAF_SD[0]).astype(np.float32)
        baf = dosage.astype(np.float32) / 2 + sd * rng.standard_normal(dosage.shape, dtype=np.float32)
        np.clip(baf, 0.0, 1.0, out=baf)
        # Arrays report 4 decimals; a VCF round trip gives exactly these float32 values.
        lrr = np.round(lrr, 4).astype(np.float32)
        baf = np.round(baf, 4).astype(np.float32)
        return g, lrr, baf

    def _write_vcf(self, out: pathlib.Path) -> None:
        gt, sites = self._load()
        individuals, names = self.batch_samples("vcf")
        header = [
            "##fileformat=VCFv4.3",
            "##source=benchmarks.data (msprime)",
            f"##contig=<ID={CONTIG},length={int(sites['contig_length'])}>",
            '##FILTER=<ID=PASS,Description="All filters passed">',
            '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
            '##FORMAT=<ID=LRR,Number=1,Type=Float,Description="Log R ratio">',
            '##FORMAT=<ID=BAF,Number=1,Type=Float,Description="B allele frequency">',
            "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(names),
        ]
        gt_text = {(a, b): f"{'.' if a < 0 else a}/{'.' if b < 0 else b}"
                   for a in (-1, 0, 1) for b in (-1, 0, 1)}
        with open(out, "wb") as raw:
            bgzip = subprocess.Popen(["bgzip", "-c"], stdin=subprocess.PIPE, stdout=raw)
            bgzip.stdin.write(("\n".join(header) + "\n").encode())
            step = self.size.variants_chunk
            for v0 in range(0, len(sites["position"]), step):
                v1 = min(len(sites["position"]), v0 + step)
                g, lrr, baf = self.block(gt, v0, v1, individuals, seed=3)
                lrr_s = np.char.mod("%.4f", lrr)
                baf_s = np.char.mod("%.4f", baf)
                lines = []
                for k in range(v1 - v0):
                    v = v0 + k
                    cells = "\t".join(
                        f"{gt_text[(int(a), int(b))]}:{x}:{y}"
                        for (a, b), x, y in zip(g[k], lrr_s[k], baf_s[k], strict=True)
                    )
                    lines.append(f"{CONTIG}\t{sites['position'][v]}\tsnp{v}\t{sites['ref'][v]}\t"
                                 f"{sites['alt'][v]}\t.\tPASS\t.\tGT:LRR:BAF\t{cells}\n")
                bgzip.stdin.write("".join(lines).encode())
            bgzip.stdin.close()
            if bgzip.wait() != 0:
                raise RuntimeError("bgzip failed")
        # tabix wants the final name: index under the partial name, then rename the index too.
        subprocess.run(["tabix", "-p", "vcf", str(out)], check=True)
        os.replace(str(out) + ".tbi", str(self.vcf) + ".tbi")

    def _convert_template(self, out: pathlib.Path) -> None:
        from bio2zarr import vcf as b2z

        b2z.convert([str(self.vcf)], str(out), variants_chunk_size=self.size.variants_chunk,
                    samples_chunk_size=self.size.samples_chunk, worker_processes=0,
                    zarr_format=3)

    def _write_batch(self, out: pathlib.Path, which: str, *, samples_chunk: int | None = None,
                     codec: dict | None = None, offset: int = 0) -> None:
        write_batch_like(self.template, out, self, which, samples_chunk or self.size.samples_chunk,
                         codec=codec, offset=offset)

    def _build_b12(self, out: pathlib.Path) -> None:
        shutil.copytree(self.store_b1, out)
        _run_engine("append", out, self.batch2)

    def _build_unaligned(self, out: pathlib.Path, float_compression: str | None = None) -> None:
        """A store of batch 1 less ``unaligned_short`` samples: its last chunk column is partial."""
        short = self.dir / "batch1-short.vcz"
        if short.exists():
            shutil.rmtree(short)
        trim_batch(self.batch1, short, self.size.samples_per_batch - self.size.unaligned_short)
        try:
            _engine_init(out, short, float_compression)
        finally:
            shutil.rmtree(short)

    def _build_purge_store(self, out: pathlib.Path) -> None:
        shutil.copytree(self.store_b12, out)
        _run_engine("tag", out, "bench-release")
        _run_engine("remove", out, self.sample_id(self.size.samples_per_batch + 1))


def write_batch_like(template: pathlib.Path, out: pathlib.Path, ds: Dataset, which: str,
                     samples_chunk: int, *, codec: dict | None = None, offset: int = 0) -> None:
    """A batch VCZ with the template's arrays and encodings, filled from the simulation.

    ``codec`` replaces the blosc configuration of the sample arrays (a batch from another tool);
    ``offset`` writes the layout of the engine's ``lay_out_with_offset`` (``offset`` empty leading
    sample slots holding fill values, and the offset in the root attributes), one encode per chunk.
    """
    import zarr

    from vczstore_dagster.store import schema
    from vczstore_dagster.store.batch import OFFSET_ATTR

    gt, _ = ds._load()
    individuals, names = ds.batch_samples(which)
    n = len(individuals)
    tmpl = zarr.open_group(str(template), mode="r")
    out.mkdir(parents=True)
    sample_arrays = {}
    for name, array in tmpl.arrays():
        axis = schema.sample_axis(array)
        if axis is None:
            shutil.copytree(template / name, out / name)
            continue
        meta = json.loads((template / name / "zarr.json").read_text())
        meta["shape"][axis] = n + offset
        meta["chunk_grid"]["configuration"]["chunk_shape"][axis] = samples_chunk
        if codec is not None:
            for c in meta["codecs"]:
                if c["name"] == "blosc":
                    c["configuration"].update(codec)
        (out / name).mkdir()
        (out / name / "zarr.json").write_text(json.dumps(meta, indent=4))
        sample_arrays[name] = axis
    root_meta = json.loads((template / "zarr.json").read_text())
    root_meta.pop("consolidated_metadata", None)
    if offset:
        root_meta.setdefault("attributes", {})[OFFSET_ATTR] = offset
    (out / "zarr.json").write_text(json.dumps(root_meta, indent=4))
    group = zarr.open_group(str(out), mode="r+", use_consolidated=False)

    def padded(name, values):
        if not offset:
            return values
        array = group[name]
        axis = sample_arrays[name]
        shape = list(values.shape)
        shape[axis] = offset
        lead = np.full(shape, array.fill_value, dtype=values.dtype)
        return np.concatenate([lead, values], axis=axis)

    group["sample_id"][:] = padded("sample_id", np.array(names, dtype=object)).astype(str)
    vchunk = ds.size.variants_chunk
    nv = group["variant_position"].shape[0]
    seed = {"batch1": 11, "batch2": 12}[which]
    for v0 in range(0, nv, vchunk):
        v1 = min(nv, v0 + vchunk)
        g, lrr, baf = ds.block(gt, v0, v1, individuals, seed=seed)
        values = {
            "call_genotype": g,
            "call_genotype_mask": g < 0,
            "call_genotype_phased": np.zeros(g.shape[:2], dtype=bool),
            "call_LRR": lrr,
            "call_BAF": baf,
        }
        for name in sample_arrays:
            if name == "sample_id":
                continue
            if name not in values:
                raise RuntimeError(f"template array {name} has no generator")
            group[name][v0:v1] = padded(name, values[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "consolidated metadata is not part of the v3 spec"
        zarr.consolidate_metadata(str(out))


def trim_batch(src: pathlib.Path, out: pathlib.Path, n: int) -> None:
    """A copy of a batch holding only its first ``n`` samples. Chunk files are copied as they are;
    the edge column's chunks keep the bytes of the dropped samples beyond the new end, which Zarr
    readers ignore (and the unaligned append overwrites when it fills that column)."""
    import zarr

    from vczstore_dagster.store import schema

    shutil.copytree(src, out)
    group = zarr.open_group(str(out), mode="r", use_consolidated=False)
    for name, array in schema.sample_arrays(group).items():
        axis = schema.sample_axis(array)
        s = array.chunks[axis]
        last = (n - 1) // s
        meta_path = out / name / "zarr.json"
        meta = json.loads(meta_path.read_text())
        meta["shape"][axis] = n
        meta_path.write_text(json.dumps(meta, indent=4))
        for chunk in (out / name / "c").rglob("*"):
            if chunk.is_file():
                index = chunk.relative_to(out / name / "c").parts
                if int(index[axis]) > last:
                    chunk.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(out))


def _engine_init(out: pathlib.Path, batch: pathlib.Path, float_compression: str | None = None) -> None:
    if float_compression:
        _run_engine("init_float", out, f"{batch}|{float_compression}")
    else:
        _run_engine("init", out, batch)


def _recode_floats(src: pathlib.Path, out: pathlib.Path, float_compression: str) -> None:
    """A batch whose float fields use ``float_compression``, as ``convert --like`` makes for a
    store created with it (the engine's own copy, block by block)."""
    import zarr

    from vczstore_dagster.store.create import copy_group, parse_float_compression

    dst = zarr.open_group(str(out), mode="w", zarr_format=3)
    copy_group(zarr.open_group(str(src), mode="r"), dst, float_codec=parse_float_compression(float_compression))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(out))


def _run_engine(op: str, store: pathlib.Path, arg) -> None:
    """Run a setup step through the engine in a subprocess (same code paths as the benchmarks)."""
    code = {
        "init": "from vczstore_dagster.store import init_store as f; f(s, from_vcz=a)",
        "init_float": "from vczstore_dagster.store import init_store as f; b, c = a.split('|'); "
                      "f(s, from_vcz=b, float_compression=c)",
        "append": "from vczstore_dagster.store import open_store, append_batch; "
                  "append_batch(open_store(s), a)",
        "tag": "from vczstore_dagster.store import open_store, tag_release; "
               "tag_release(open_store(s), a)",
        "remove": "from vczstore_dagster.store import open_store; "
                  "from vczstore_dagster.store.remove import remove_samples; "
                  "remove_samples(open_store(s), [a])",
    }[op]
    subprocess.run([sys.executable, "-c", f"import sys; s, a = sys.argv[1], sys.argv[2]; {code}",
                    str(store), str(arg)], check=True)


def _du(path: pathlib.Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    """``python -m benchmarks.data quick|full [ARTIFACT ...]``: build what is missing."""
    sizes = {size.name: size for size in (QUICK, FULL)}
    if len(sys.argv) < 2 or sys.argv[1] not in sizes:
        raise SystemExit(f"usage: python -m benchmarks.data {'|'.join(sizes)} [ARTIFACT ...]")
    Dataset(sizes[sys.argv[1]]).ensure(sys.argv[2:] or None)


if __name__ == "__main__":
    main()
