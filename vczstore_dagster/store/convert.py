"""VCF files → a VCZ batch encoded in a store's schema (dtypes, trailing shapes, chunks, codecs,
Zarr format) and laid out on the store's sample grid, so that appending it copies encoded chunks.

The conversion runs in steps over bio2zarr's partition API, each of which can run in another
process or on another machine that sees the work directory at the same path:

    begin(vcfs, work, partitions=4)    split the VCFs into explode partitions (bio2zarr explode_init)
    explode_partition(work, j)         each explode partition, in any order
    plan_encoding(work, like=store)    the store's schema; split into encode partitions (whole
                                       variant chunks) and estimate each one's memory
    encode_partition(work, j)          each encode partition, in any order
    finish(work, out, like=store)      finalise, index, harmonise to the store's variants → out

:func:`convert_vcfs` runs the same steps in one process. Every step can be rerun after a crash and
gives the same output: a partition is cleared before it is written again, a finished ICF is not
finalised twice, and ``finish`` finalises a hard-linked copy of the encoded partitions, which stay
whole until ``out`` is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
import time

from vczstore_dagster.store import schema, vcfschema
from vczstore_dagster.store.errors import InvalidInputError
from vczstore_dagster.store.harmonise import DEFAULT, harmonise_into
from vczstore_dagster.store.plan import VariantPlan, recorded_plan
from vczstore_dagster.store.policy import Thresholds
from vczstore_dagster.store.transaction import pause_for_tests
from vczstore_dagster.store.vcfinput import indexed, unreadable

STATE, ENCODING, DONE = "conversion.json", "encoding.json", "result.json"
ICF, ENCODED, FINALISING, SCHEMA = "batch.icf", "encoded.vcz", "finalising.vcz", "schema.json"
MISFIT = "misfit-p{}.txt"  # an encode partition that does not fit the store's schema says why here
ENCODE_ERRORS = (ValueError, NotImplementedError, TypeError, OverflowError)


@dataclasses.dataclass
class ConvertResult:
    path: str
    num_samples: int
    num_variants: int
    sample_offset: int
    dropped_fields: list[str]
    seconds: float
    harmonisation: VariantPlan | None = None  # with ``like``: the plan harmonising carried out
    partitions: int = 1  # encode partitions
    explode_partitions: int = 1
    max_encoding_memory: int = 0  # bytes one encode partition needs (bio2zarr's estimate)
    misfit: str | None = None  # why the batch was encoded in its own schema, not the store's


@dataclasses.dataclass
class ExplodePlan:
    num_partitions: int
    num_samples: int


@dataclasses.dataclass
class EncodePlan:
    num_partitions: int
    max_encoding_memory: int  # bytes
    num_variants: int
    zarr_format: int
    store_schema: bool  # encoded in the store's schema (False: the batch's own)
    dropped_fields: list[str]
    misfit: str | None = None


@dataclasses.dataclass
class PartitionResult:
    partition: int
    seconds: float
    pid: int  # the process that did the work
    records: int | None = None  # explode partitions: VCF records read
    misfit: str | None = None  # encode partitions that gave up the store's schema (see finish)


class _Work:
    """The work directory of one conversion and what its steps left in it."""

    def __init__(self, path):
        self.path = pathlib.Path(path).absolute()  # bio2zarr records paths as given
        self.icf, self.encoded = self.path / ICF, self.path / ENCODED

    def read(self, name: str) -> dict:
        try:
            return json.loads((self.path / name).read_text())
        except FileNotFoundError:
            raise InvalidInputError(f"{self.path}: no conversion was begun here "
                                    f"({name} is missing)") from None

    def write(self, name: str, value: dict) -> None:
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(json.dumps(value))
        tmp.replace(self.path / name)

    @property
    def names(self) -> str:
        return ", ".join(self.read(STATE)["vcfs"])

    def writer(self, zarr_format: int | None = None):
        from bio2zarr import vcf, vcz

        return vcz.VcfZarrWriter(vcf.IntermediateColumnarFormat, self.encoded, zarr_format=zarr_format)


def begun(work) -> bool:
    return (_Work(work).path / STATE).exists()


def finished(work) -> bool:
    return (_Work(work).path / DONE).exists()


def begin(vcfs, work, *, partitions: int = 1, variants_chunk_size: int | None = None,
          samples_chunk_size: int | None = None, zarr_format: int = 3, worker_processes: int = 0,
          progress: bool = False) -> ExplodePlan:
    """Start converting ``vcfs`` in the empty directory ``work``: index them if needed and split
    them into explode partitions (``partitions`` is bio2zarr's target: it splits by the index, at
    least once per VCF and per contig, no finer than the index allows). The chunk sizes and the
    format apply when there is no store to take them from."""
    from bio2zarr import vcf as b2z

    w = _Work(work)
    if w.path.exists() and any(w.path.iterdir()):
        raise InvalidInputError(f"{w.path}: not empty; a conversion begins in an empty directory")
    vcfs = [pathlib.Path(v).absolute() for v in vcfs]
    for v in vcfs:
        if not v.is_file():
            raise InvalidInputError(f"{v}: no such VCF file")
    (w.path / "inputs").mkdir(parents=True)
    inputs = [indexed(v, w.path / "inputs") for v in vcfs]
    try:
        summary = b2z.explode_init(str(w.icf), [str(v) for v in inputs],
                                   target_num_partitions=max(1, partitions),
                                   worker_processes=worker_processes, show_progress=progress)
    except Exception as exc:
        raise InvalidInputError(unreadable(vcfs, exc)) from exc
    w.write(STATE, {"vcfs": [str(v) for v in vcfs], "partitions": max(1, partitions),
                    "variants_chunk_size": variants_chunk_size,
                    "samples_chunk_size": samples_chunk_size, "zarr_format": zarr_format,
                    "started": time.time()})
    return ExplodePlan(summary.num_partitions, summary.num_samples)


def sample_ids(work) -> list[str]:
    """The batch's sample IDs (for callers that must keep them out of what they show): from the
    ICF, or once it is cleared from the finished VCZ (none when that is gone too)."""
    w = _Work(work)
    if (w.path / DONE).exists():
        out = pathlib.Path(w.read(DONE)["path"])
        return [str(s) for s in _open(out)["sample_id"][:] if s] if out.exists() else []
    meta = _icf_metadata(w) or json.loads((w.icf / "wip" / "metadata.json").read_text())
    return [s["id"] for s in meta["samples"]]


def explode_partition(work, partition: int) -> PartitionResult:
    """Read explode partition ``partition`` of the VCFs into the ICF (a rerun rewrites it)."""
    from bio2zarr import vcf as b2z

    w, t0 = _Work(work), time.perf_counter()
    writer = b2z.IntermediateColumnarFormatWriter(w.icf)
    writer.load_metadata()
    _check_partition("explode", partition, writer.num_partitions)
    for field in writer.metadata.fields:  # what a killed attempt wrote
        shutil.rmtree(b2z.get_vcf_field_path(w.icf, field) / f"p{partition}", ignore_errors=True)
    try:
        writer.explode_partition(partition)
    except Exception as exc:
        raise InvalidInputError(unreadable(w.read(STATE)["vcfs"], exc)) from exc
    records = json.loads((w.icf / "wip" / f"p{partition}.json").read_text())["num_records"]
    return PartitionResult(partition, time.perf_counter() - t0, os.getpid(), records=records)


def explode_all(work, *, worker_processes: int = 0, progress: bool = False) -> None:
    """Every explode partition, here (bio2zarr's pool of ``worker_processes``)."""
    from bio2zarr import vcf as b2z

    w = _Work(work)
    try:
        b2z.IntermediateColumnarFormatWriter(w.icf).explode(worker_processes=worker_processes,
                                                            show_progress=progress)
    except Exception as exc:
        raise InvalidInputError(unreadable(w.read(STATE)["vcfs"], exc)) from exc


def plan_encoding(work, like=None, *, own_schema_if_misfit: bool = False) -> EncodePlan:
    """Finish the ICF and prepare the encoding: with ``like`` (a Store) in the store's schema,
    else the batch's own. A batch that does not fit the store's schema is refused, or with
    ``own_schema_if_misfit`` encoded in its own (``misfit`` says why) for a check to report."""
    w = _Work(work)
    _finalise_icf(w)
    template = like.readonly_group() if like is not None else None
    spec, dropped = None, []
    if template is not None:
        try:
            if vcfschema.num_samples(w.icf) == 0:
                raise InvalidInputError(f"{w.names}: no samples, so nothing to append (a "
                                        "variants-only VCF starts a store: init --variants)")
            spec, dropped = vcfschema.schema_like(w.icf, template)
        except InvalidInputError as exc:
            if not own_schema_if_misfit:
                raise
            return _plan(w, None, None, [], str(exc))
    return _plan(w, template, spec, dropped, None)


def _plan(w: _Work, template, spec: dict | None, dropped: list[str], misfit: str | None) -> EncodePlan:
    from bio2zarr import vcf as b2z

    state = w.read(STATE)
    fmt = schema.zarr_format(template) if template is not None else state["zarr_format"]
    if template is None and vcfschema.num_samples(w.icf) == 0:
        spec = vcfschema.sites_only_schema(w.icf, state["variants_chunk_size"],
                                           state["samples_chunk_size"])
    if spec is not None:
        (w.path / SCHEMA).write_text(json.dumps(spec))
    for leftover in (w.encoded, w.path / FINALISING, w.path / ENCODING, *w.path.glob(MISFIT.format("*"))):
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink(missing_ok=True)
    try:
        summary = b2z.encode_init(
            str(w.icf), str(w.encoded), state["partitions"],
            schema_path=str(w.path / SCHEMA) if spec is not None else None,
            variants_chunk_size=None if spec is not None else state["variants_chunk_size"],
            samples_chunk_size=None if spec is not None else state["samples_chunk_size"],
            zarr_format=fmt)
    except ENCODE_ERRORS as exc:
        raise InvalidInputError(_cannot_encode(w.names, exc, template is not None)) from exc
    writer = w.writer(fmt)
    writer.load_metadata()
    _record_vcf_numbers(w, writer)
    plan = EncodePlan(summary.num_partitions, int(writer.get_max_encoding_memory()),
                      summary.num_variants, fmt, template is not None, dropped, misfit)
    w.write(ENCODING, dataclasses.asdict(plan))
    return plan


def _record_vcf_numbers(w: _Work, writer) -> None:
    """Each INFO and FORMAT array's VCF Number, on the arrays ``encode_init`` made (the encode
    partitions copy them and finalising moves them): harmonisation copies a fixed Number's values
    as they are at a site whose alleles it remaps, and refuses ``Number=.``'s."""
    import zarr

    numbers = {f"{f['category']}/{f['name']}": f["vcf_number"] for f in _icf_metadata(w)["fields"]
               if f["category"] in ("INFO", "FORMAT")}
    for spec in writer.schema.fields:
        number = numbers.get(spec.source or "")
        if number is not None:
            array = zarr.open_array(writer.arrays_path / spec.name, mode="r+")
            array.attrs[schema.VCF_NUMBER_ATTR] = str(number)


def encode_partition(work, partition: int, *, own_schema_if_misfit: bool = False) -> PartitionResult:
    """Encode partition ``partition`` (a rerun rewrites it). Values that do not fit the store's
    schema are refused, or with ``own_schema_if_misfit`` recorded for :func:`finish`, which then
    encodes the batch in its own schema."""
    from bio2zarr import vcf as b2z

    w, t0 = _Work(work), time.perf_counter()
    plan = w.read(ENCODING)
    _check_partition("encode", partition, plan["num_partitions"])
    shutil.rmtree(w.encoded / "wip" / "partitions" / f"wip_p{partition}", ignore_errors=True)
    try:
        b2z.encode_partition(str(w.encoded), partition)
    except ENCODE_ERRORS as exc:
        message = _cannot_encode(w.names, exc, plan["store_schema"])
        if not (own_schema_if_misfit and plan["store_schema"]):
            raise InvalidInputError(message) from exc
        (w.path / MISFIT.format(partition)).write_text(message)
        return PartitionResult(partition, time.perf_counter() - t0, os.getpid(), misfit=message)
    return PartitionResult(partition, time.perf_counter() - t0, os.getpid())


def encode_all(work, *, worker_processes: int = 0, progress: bool = False,
               own_schema_if_misfit: bool = False) -> None:
    """Every encode partition, here (bio2zarr's pool of ``worker_processes``); misfits as
    :func:`encode_partition` takes them."""
    w = _Work(work)
    plan = w.read(ENCODING)
    try:
        w.writer(plan["zarr_format"]).encode_all_partitions(worker_processes=worker_processes,
                                                            show_progress=progress)
    except ENCODE_ERRORS as exc:
        message = _cannot_encode(w.names, exc, plan["store_schema"])
        if not (own_schema_if_misfit and plan["store_schema"]):
            raise InvalidInputError(message) from exc
        (w.path / MISFIT.format("-all")).write_text(message)


def finish(work, out, like=None, *, thresholds: Thresholds | None = DEFAULT,
           own_schema_if_misfit: bool = False, progress: bool = False) -> ConvertResult:
    """Finalise the encoded partitions and write the batch at ``out`` (replacing what an earlier
    attempt left there): harmonised to ``like``'s variant set and laid out on its sample grid when
    encoded in its schema, refused (nothing written) when the variant plan fails ``thresholds``
    (None: record the plan, leave the verdict to ``check``)."""
    w, out = _Work(work), pathlib.Path(out)
    if (w.path / DONE).exists():  # an earlier attempt wrote out, then died
        return _finished(w, out)
    shutil.rmtree(out, ignore_errors=True)
    plan = EncodePlan(**w.read(ENCODING))
    if plan.store_schema and like is None:
        raise InvalidInputError(f"{w.path}: encoded in a store's schema; finish it with that store")
    misfit = next((p.read_text() for p in sorted(w.path.glob(MISFIT.format("*")))), None)
    if misfit is not None and not own_schema_if_misfit:
        raise InvalidInputError(misfit)
    harmonisation, offset = None, 0
    if plan.store_schema and misfit is None:
        template = like.readonly_group()
        offset = schema.num_samples(template) % schema.samples_chunk_size(template)
        finalised = _finalised(w, plan, progress)
        pause_for_tests("finalised")
        try:  # the store's variant set, laid out on the store's sample grid
            harmonisation = harmonise_into(template, finalised, out, sample_offset=offset,
                                           thresholds=thresholds, name=out.name)
        except InvalidInputError as exc:
            if not own_schema_if_misfit:
                raise
            misfit, offset = str(exc), 0
    if misfit is not None and plan.store_schema:
        plan = _plan(w, None, None, [], misfit)
    if not plan.store_schema:
        for j in range(plan.num_partitions):  # encoded again here when the store's schema failed
            if not (w.encoded / "wip" / "partitions" / f"p{j}").exists():
                encode_partition(w.path, j)
        os.rename(_finalised(w, plan, progress), out)
    state = w.read(STATE)
    g = _open(out)
    result = ConvertResult(str(out), schema.num_samples(g) - offset, schema.num_variants(g), offset,
                           plan.dropped_fields, time.time() - state["started"], harmonisation,
                           plan.num_partitions, len(_icf_metadata(w)["partitions"]),
                           plan.max_encoding_memory, plan.misfit)
    w.write(DONE, {k: v for k, v in dataclasses.asdict(result).items() if k != "harmonisation"})
    _clear(w)
    return result


def _finished(w: _Work, out: pathlib.Path) -> ConvertResult:
    if not out.exists():
        raise InvalidInputError(f"{w.path}: this conversion finished, and {out} is gone since; "
                                "convert the batch again")
    raw = w.read(DONE)
    _clear(w)
    return ConvertResult(**{**raw, "harmonisation": recorded_plan(_open(out), out.name)})


def _clear(w: _Work) -> None:
    """The ICF, the partitions and the indexed copies: every copy of the batch but ``out``."""
    for name in (ICF, ENCODED, FINALISING, "inputs"):
        shutil.rmtree(w.path / name, ignore_errors=True)


def _open(path):
    import zarr

    return zarr.open_group(str(path), mode="r")


def _finalised(w: _Work, plan: EncodePlan, progress: bool) -> pathlib.Path:
    """The encoded batch, finalised and indexed, from a hard-linked copy of the partitions (a
    crash while finalising leaves them whole for the rerun; bio2zarr moves files, and zarr
    replaces rather than rewrites them, so the copy never writes through to them)."""
    from bio2zarr import vcf, vcz

    target = w.path / FINALISING
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(w.encoded, target, copy_function=_link_or_copy)
    # bio2zarr's encode_finalise would take the Zarr format from BIO2ZARR_DEFAULT_ZARR_FORMAT
    vcz.VcfZarrWriter(vcf.IntermediateColumnarFormat, target,
                      zarr_format=plan.zarr_format).finalise(show_progress=progress)
    vcf.create_index(str(target))
    return target


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a filesystem without hard links
        shutil.copy2(src, dst)


def _finalise_icf(w: _Work) -> None:
    """bio2zarr's explode_finalise, once: it removes the ICF's ``wip`` folder after writing its
    metadata, so a complete metadata file means it ran (and a rerun would find no ``wip``)."""
    from bio2zarr import vcf as b2z

    if _icf_metadata(w) is not None:
        shutil.rmtree(w.icf / "wip", ignore_errors=True)
        return
    try:
        b2z.explode_finalise(str(w.icf))
    except FileNotFoundError as exc:
        raise InvalidInputError(f"{w.names}: explode partitions are missing ({exc}); run every "
                                "explode partition before planning the encoding") from exc
    except Exception as exc:  # e.g. no partition at all: an index that cannot be read
        raise InvalidInputError(unreadable(w.read(STATE)["vcfs"], exc)) from exc


def _icf_metadata(w: _Work) -> dict | None:
    try:
        return json.loads((w.icf / "metadata.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _check_partition(kind: str, partition: int, count: int) -> None:
    if not 0 <= partition < count:
        raise InvalidInputError(f"{kind} partition {partition}: the conversion has {count} "
                                f"(0 to {count - 1})")


def convert_vcfs(vcfs, out, *, like=None, progress: bool = False, worker_processes: int = 0,
                 variants_chunk_size: int | None = None, samples_chunk_size: int | None = None,
                 zarr_format: int = 3, thresholds: Thresholds | None = DEFAULT, work=None,
                 own_schema_if_misfit: bool = False) -> ConvertResult:
    """Convert ``vcfs`` into a VCZ at ``out``, every step in this process (bio2zarr's pool of
    ``worker_processes`` for the partitions); with ``like`` (a Store), in that store's schema and
    harmonised to its variant set, refused (nothing written) when the variant plan fails
    ``thresholds`` or shows another reference (None: record the plan, leave the verdict to
    ``check``). ``work``: an empty directory to convert in (kept, see :func:`finish`), else a
    temporary one."""
    out = pathlib.Path(out)
    if out.exists():
        raise InvalidInputError(f"{out}: already exists; choose a new output path")
    with contextlib.ExitStack() as stack:
        if work is None:
            work = stack.enter_context(tempfile.TemporaryDirectory(prefix="vczstore-convert-",
                                                                   dir=out.parent))
        # bio2zarr's own split: four partitions per worker process
        begin(vcfs, work, partitions=max(1, worker_processes * 4),
              variants_chunk_size=variants_chunk_size, samples_chunk_size=samples_chunk_size,
              zarr_format=zarr_format, worker_processes=worker_processes, progress=progress)
        explode_all(work, worker_processes=worker_processes, progress=progress)
        plan_encoding(work, like, own_schema_if_misfit=own_schema_if_misfit)
        encode_all(work, worker_processes=worker_processes, progress=progress,
                   own_schema_if_misfit=own_schema_if_misfit)
        return finish(work, out, like, thresholds=thresholds,
                      own_schema_if_misfit=own_schema_if_misfit, progress=progress)


def _cannot_encode(names: str, exc, store_schema: bool) -> str:
    field = _failing_field(exc)
    return (f"{names}: " + (f"field {field} " if field else "") + "cannot be encoded"
            + (" in the store's schema" if store_schema else "") + f" ({exc})")


def _failing_field(exc) -> str | None:
    """The field bio2zarr was encoding when it raised (its frames hold the field's spec)."""
    tb, name = exc.__traceback__, None
    while tb is not None:
        spec = tb.tb_frame.f_locals.get("array_spec")
        name = getattr(spec, "name", None) or name
        tb = tb.tb_next
    return name
