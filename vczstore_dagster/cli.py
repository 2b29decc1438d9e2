"""The ``vczstore`` command line: a thin shell over :mod:`vczstore_dagster.store`.

Exit codes: 0 done; 1 refused, failed or a check found errors; 2 usage (click's default).
An engine error (:class:`~vczstore_dagster.store.VczStoreError`) prints one line,
``error: <message>``, on stderr; ``-v`` adds the traceback and turns on logging.

Nothing heavy is imported at module level (no zarr, icechunk, numpy, bio2zarr or dagster) so
that ``vczstore --help`` answers at once: every command imports the engine when it runs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import textwrap
import traceback
from typing import NoReturn

import click

BACKENDS = ("icechunk", "zarr")
ERRORS_MODULE = "vczstore_dagster.store.errors"


@dataclasses.dataclass
class Settings:
    progress: bool
    verbose: int
    quieted: bool = False


def _settings(ctx: click.Context) -> Settings:
    obj = ctx.find_object(Settings)
    if obj is None:  # a command invoked on its own, without the group
        obj = Settings(progress=sys.stderr.isatty(), verbose=0)
    return obj


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first


def _is_engine_error(exc: BaseException) -> bool:
    # The engine's exception family is only loaded once a command has imported the engine; an
    # exception of that family can only exist when it has been. No import here: --help stays fast.
    errors = sys.modules.get(ERRORS_MODULE)
    return errors is not None and isinstance(exc, errors.VczStoreError)


class VczstoreGroup(click.Group):
    """Turns engine errors into one line on stderr and exit code 1 (traceback with ``-v``)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:
            raise  # `vczstore view STORE | head`: click ends quietly
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:
            verbose = _settings(ctx).verbose
            if verbose:
                traceback.print_exc(file=sys.stderr)
            if _is_engine_error(exc):
                click.echo(f"error: {_error_line(exc)}", err=True)
            else:
                hint = "" if verbose else " (run with -v for the traceback)"
                click.echo(f"error: unexpected {type(exc).__name__}: {_error_line(exc)}{hint}",
                           err=True)
            ctx.exit(1)


# ------------------------------------------------------------------------------------------------
# Shared options and helpers
# ------------------------------------------------------------------------------------------------


def _parse_storage_options(ctx, param, values):
    """``KEY=VALUE`` pairs → the engine's typed dict; a malformed or unknown key is a usage error."""
    if not values:
        return {}
    for pair in values:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", ctx=ctx, param=param)
    from vczstore_dagster.store import InvalidInputError, parse_storage_options

    try:
        return parse_storage_options(list(values))
    except InvalidInputError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc


storage_option = click.option(
    "--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
    callback=_parse_storage_options,
    help="S3 setting, repeatable: endpoint_url, region, allow_http, access_key_id, "
         "secret_access_key, session_token, anonymous, force_path_style. Unset ones come from "
         "the usual AWS_* environment variables.")

backend_option = click.option(
    "--backend", type=click.Choice(BACKENDS), default=None,
    help="Force the backend instead of detecting it (icechunk or zarr).")

at_option = click.option(
    "--at", "at", metavar="REF", default=None,
    help="A release tag, branch or snapshot id (Icechunk); default: the head of main.")


dask_option = click.option(
    "--dask-scheduler", "dask_scheduler", metavar="ADDRESS", envvar="VCZSTORE_DASK_SCHEDULER",
    default=None,
    help="Run the chunk copies and re-encodes on this Dask scheduler (tcp://HOST:PORT), or "
         "`local` for worker processes on this machine (default: $VCZSTORE_DASK_SCHEDULER, "
         "else threads in this process). Workers must reach the store and the batch by the "
         "same path or URL.")


def store_options(f):
    return storage_option(backend_option(f))


def _command_progress(ctx: click.Context, param, value: bool | None) -> None:
    if value is not None:  # given after the command name: it overrides the group's
        ctx.obj = dataclasses.replace(_settings(ctx), progress=value)


progress_option = click.option(
    "--progress/--no-progress", default=None, expose_value=False, callback=_command_progress,
    help="Progress bars on stderr (default: the group's setting, else on when stderr is a "
         "terminal).")


def _echo_cluster(work) -> None:
    if work is not None:
        click.echo(f"dask: {work.tasks} task(s) on {work.workers_used} of {work.workers} "
                   f"worker(s) at {work.scheduler}")


lock_option = click.option(
    "--lock-timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
    help="How long to wait for another writer's lock on a local store before giving up "
         "(default: VCZSTORE_LOCK_TIMEOUT, else 3600).")


def threshold_options(f):
    """--min-site-coverage and --max-dropped-fraction (the engine's Thresholds)."""
    f = click.option(
        "--max-dropped-fraction", type=click.FloatRange(0, 1), default=None, metavar="FRACTION",
        help="Refuse a batch more than this share of whose records are at no store site and "
             "would be dropped (default 0.5; 1 turns it off).")(f)
    return click.option(
        "--min-site-coverage", type=click.FloatRange(0, 1), default=None, metavar="FRACTION",
        help="Refuse a batch that covers less than this share of the store's sites, the rest "
             "filled with missing values (default 0.5; 0 turns it off).")(f)


def _thresholds(min_site_coverage, max_dropped_fraction):
    from vczstore_dagster.store import Thresholds

    return Thresholds.of(min_site_coverage, max_dropped_fraction)


def _coverage_table(plan) -> str:
    """Per contig and overall: the store's sites the batch covers, the batch's records dropped."""
    from vczstore_dagster.store.plan import percent

    rows = [[name, str(c.store_sites), str(c.covered), percent(c.site_coverage), str(c.records),
             str(c.dropped), percent(c.dropped_fraction)]
            for name, c in plan.contigs.items() if c.store_sites or c.records]
    rows.append(["all", str(plan.store_sites), str(plan.covered), percent(plan.site_coverage),
                 str(plan.batch_records), str(plan.dropped), percent(plan.dropped_fraction)])
    return _table(rows, ["CONTIG", "STORE SITES", "COVERED", "COVERAGE", "BATCH RECORDS",
                         "DROPPED", "DROPPED %"])


def _quiet_libraries(settings: Settings) -> None:
    """Keep Icechunk's Rust warnings and library warnings off the terminal unless -v."""
    if settings.quieted:
        return
    settings.quieted = True
    import icechunk

    if settings.verbose:
        icechunk.set_logs_filter(None)  # ICECHUNK_LOG, or Icechunk's default
    elif not os.environ.get("ICECHUNK_LOG"):
        icechunk.set_logs_filter("error")
    if not settings.verbose:
        import warnings

        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="zarr.*")


class _EchoHandler(logging.Handler):
    """Log records on whatever ``sys.stderr`` is at the time (click's test runner swaps it)."""

    def __init__(self, verbose: int):
        super().__init__()
        self.verbose = verbose

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.verbose:
                text = f"{record.levelname.lower()} {record.name}: {record.getMessage()}"
            else:
                text = f"{record.levelname.lower()}: {record.getMessage()}"
            click.echo(text, err=True)
        except Exception:  # never let logging break a command
            self.handleError(record)


def _configure_logging(ctx: click.Context, verbose: int) -> None:
    """-v: every logger at INFO (-vv: DEBUG) on stderr. Otherwise only the engine's warnings:
    libraries' own (bio2zarr's memory estimates and such) are not for operators. Undone when the
    command ends, so that in-process callers (tests, CliRunner) keep their logging as it was."""
    root = logging.getLogger()
    engine = logging.getLogger("vczstore_dagster")
    handler = _EchoHandler(verbose)
    if verbose:
        attached = [(root, handler)]
        old_level = root.level
        root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
        ctx.call_on_close(lambda: root.setLevel(old_level))
    else:
        handler.setLevel(logging.WARNING)
        # A handler on bio2zarr's logger keeps its records from Python's last-resort stderr
        # handler; they still reach any handler the caller put on the root logger.
        attached = [(engine, handler), (logging.getLogger("bio2zarr"), logging.NullHandler())]
    for logger, h in attached:
        logger.addHandler(h)
        ctx.call_on_close(lambda logger=logger, h=h: logger.removeHandler(h))


def _open(ctx: click.Context, url: str, storage_options: dict, backend: str | None,
          lock_timeout: float | None = None):
    _quiet_libraries(_settings(ctx))
    from vczstore_dagster.store import open_store

    return open_store(url, storage_options=storage_options or None, backend=backend,
                      lock_timeout=lock_timeout)


def _bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _short(snapshot: str | None) -> str:
    return snapshot or "-"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# The group
# ------------------------------------------------------------------------------------------------


@click.group(cls=VczstoreGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--progress/--no-progress", default=None,
              help="Progress bars on stderr (default: on when stderr is a terminal); also "
                   "accepted after the command name.")
@click.option("-v", "--verbose", count=True,
              help="Tracebacks on errors and log messages (-vv: debug).")
@click.version_option(package_name="vczstore-dagster", prog_name="vczstore")
@click.pass_context
def cli(ctx: click.Context, progress: bool | None, verbose: int) -> None:
    """A cohort genotype store (VCF Zarr on Icechunk or plain Zarr): append batches of samples,
    withdraw samples, tag releases.

    STORE is a local path or s3://bucket/prefix.

    \b
    Typical use:
      vczstore convert first.vcf.gz first.vcz --samples-chunk-size 1000
      vczstore init data/store --from first.vcz
      vczstore convert next.vcf.gz next.vcz --like data/store
      vczstore check data/store next.vcz
      vczstore append data/store next.vcz
      vczstore tag data/store 2026-11
    """
    if progress is None:
        progress = sys.stderr.isatty()
    ctx.obj = Settings(progress=progress, verbose=verbose)
    _configure_logging(ctx, verbose)


# ------------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------------


@cli.command()
@click.argument("store")
@click.option("--from", "from_vcz", metavar="VCZ", default=None,
              help="A VCZ whose samples become the store's first batch.")
@click.option("--variants", multiple=True, metavar="VCZ_OR_VCF",
              help="A variants-only source (VCZ or VCF): the store starts with zero samples. "
                   "Repeat it for the union of several (merged as bcftools merge -m none does).")
@click.option("--backend", type=click.Choice(BACKENDS), default="icechunk", show_default=True)
@click.option("--zarr-format", type=click.Choice(["2", "3"]), default="3", show_default=True,
              help="Zarr format of a plain Zarr store (Icechunk is always 3).")
@click.option("--samples-chunk-size", type=click.IntRange(min=1), default=None,
              help="Sample chunk size (--variants; with --from it must match the VCZ's).")
@click.option("--batch-id", default=None, help="Id of the first batch (default: the VCZ's name).")
@click.option("--float-compression", default=None, metavar="CNAME:LEVEL[:SHUFFLE]",
              help="Re-encode float FORMAT fields (LRR, BAF...) with this blosc codec, e.g. zstd:1, "
                   "instead of keeping the source's (bio2zarr: zstd:7). Every later re-encode "
                   "(appends onto a partial sample column, removals, redactions) follows it; "
                   "see docs/benchmarks.md for speed against size.")
@storage_option
@dask_option
@progress_option
@click.pass_context
def init(ctx, store, from_vcz, variants, backend, zarr_format, samples_chunk_size, batch_id,
         float_compression, storage_options, dask_scheduler):
    """Create a new store at STORE, from a VCZ (--from) or a variants-only source (--variants)."""
    if (from_vcz is None) == (not variants):
        raise click.UsageError("give exactly one of --from VCZ or --variants VCZ_OR_VCF")
    if batch_id is not None and from_vcz is None:
        raise click.UsageError("--batch-id goes with --from (a --variants store has no samples)")
    settings = _settings(ctx)
    _quiet_libraries(settings)
    from vczstore_dagster.store import init_store

    result = init_store(store, from_vcz=from_vcz, variants=list(variants) or None,
                        storage_options=storage_options or None, backend=backend,
                        zarr_format=int(zarr_format), samples_chunk_size=samples_chunk_size,
                        batch_id=batch_id, float_compression=float_compression,
                        progress=settings.progress, dask_scheduler=dask_scheduler)
    what = f" (batch {result.batch_id})" if result.batch_id else ""
    click.echo(f"created {result.backend} store {result.url}: {result.num_samples} samples{what}, "
               f"{result.num_variants} variants")
    if result.snapshot_id:
        click.echo(f"snapshot: {result.snapshot_id}")
    _echo_cluster(result.cluster)


@cli.command()
@click.argument("vcfs", nargs=-1, required=True, metavar="VCF...")
@click.argument("out")
@click.option("--like", "like", metavar="STORE", default=None,
              help="Encode in this store's schema (dtypes, shapes, chunks, codecs, Zarr format) "
                   "and on its sample grid, so that appending copies encoded chunks.")
@click.option("--variants-chunk-size", type=click.IntRange(min=1), default=None,
              help="Variant chunk size (not with --like).")
@click.option("--samples-chunk-size", type=click.IntRange(min=1), default=None,
              help="Sample chunk size (not with --like).")
@click.option("--zarr-format", type=click.Choice(["2", "3"]), default=None,
              help="Zarr format of the output (default 3; not with --like).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Worker processes for bio2zarr (0: in this process).")
@threshold_options
@store_options
@progress_option
@click.pass_context
def convert(ctx, vcfs, out, like, variants_chunk_size, samples_chunk_size, zarr_format, workers,
            min_site_coverage, max_dropped_fraction, storage_options, backend):
    """Convert VCF file(s) into a VCZ batch at OUT (unindexed VCFs are indexed on the way).

    With --like STORE the batch is harmonised to the store's variant set and refused when it
    covers too few of the store's sites, would drop too many of its records, or is on another
    reference (contig names, contig lengths, positions shifted by one). A VCZ directory given
    instead of VCF files (one converted elsewhere) is harmonised the same way."""
    thresholds = [min_site_coverage, max_dropped_fraction]
    if like is not None:
        clash = [name for name, value in (("--variants-chunk-size", variants_chunk_size),
                                          ("--samples-chunk-size", samples_chunk_size),
                                          ("--zarr-format", zarr_format)) if value is not None]
        if clash:
            raise click.UsageError(f"{', '.join(clash)}: not with --like (the store decides)")
    elif storage_options or backend or thresholds != [None, None]:
        raise click.UsageError("--storage-option, --backend, --min-site-coverage and "
                               "--max-dropped-fraction go with --like STORE")
    settings = _settings(ctx)
    _quiet_libraries(settings)
    from vczstore_dagster.store import convert_vcfs, harmonise_batch

    template = _open(ctx, like, storage_options, backend) if like is not None else None
    if template is not None and len(vcfs) == 1 and os.path.isdir(vcfs[0]):
        plan = harmonise_batch(template, vcfs[0], out, thresholds=_thresholds(*thresholds))
        click.echo(f"harmonised {vcfs[0]} → {out}")
    else:
        result = convert_vcfs(list(vcfs), out, like=template, progress=settings.progress,
                              worker_processes=workers, variants_chunk_size=variants_chunk_size,
                              samples_chunk_size=samples_chunk_size,
                              zarr_format=int(zarr_format or 3),
                              thresholds=_thresholds(*thresholds) if template is not None else None)
        click.echo(f"converted {len(vcfs)} VCF file(s) → {result.path}: {result.num_samples} "
                   f"samples, {result.num_variants} variants in {result.seconds:.1f} s")
        if result.sample_offset:
            click.echo(f"laid out on the store's sample grid (offset {result.sample_offset})")
        for field in result.dropped_fields:
            click.echo(f"warning: field {field} is not in the store and was dropped", err=True)
        plan = result.harmonisation
    if plan is not None:
        from vczstore_dagster.store.policy import assess

        click.echo(f"coverage: {plan.coverage_line()}")
        for f in assess(plan, os.path.basename(str(out)), allow_new_alleles=True):
            if f.severity == "warning":
                click.echo(f"warning: {f.message}", err=True)
        if plan.new_alleles:
            click.echo(f"note: {plan.num_new_alleles} new ALT allele(s); append with "
                       "--allow-new-alleles to add them to the store", err=True)


@cli.command()
@click.argument("store")
@click.argument("batch")
@click.option("--allow-new-alleles", is_flag=True,
              help="Check as `append --allow-new-alleles` would: new ALT alleles are not an error.")
@threshold_options
@store_options
@click.pass_context
def check(ctx, store, batch, allow_new_alleles, min_site_coverage, max_dropped_fraction,
          storage_options, backend):
    """Check whether BATCH (a VCZ) can be appended to STORE; exit 1 on any error finding.

    Shows the coverage figures per contig (the store's sites the batch covers, the batch's
    records dropped), then every finding."""
    from vczstore_dagster.store import check_batch

    report = check_batch(_open(ctx, store, storage_options, backend), batch,
                         allow_new_alleles=allow_new_alleles,
                         thresholds=_thresholds(min_site_coverage, max_dropped_fraction))
    if report.plan is not None:
        click.echo(_coverage_table(report.plan))
        click.echo()
    rows = [[f.severity, f.id, f.message] for f in report.findings]
    if rows:
        click.echo(_table(rows, ["SEVERITY", "ID", "MESSAGE"]))
    n_err, n_warn = len(report.errors), len(report.warnings)
    if report.ok:
        click.echo(f"compatible: {report.num_samples} samples, {n_warn} warning(s)"
                   + ("; encoded chunks will be copied" if report.fast_path else ""))
        return
    click.echo(f"refused: {n_err} error(s), {n_warn} warning(s)", err=True)
    ctx.exit(1)


@cli.command()
@click.argument("store")
@click.argument("batch")
@click.option("--batch-id", default=None, help="Id recorded in the ledger (default: BATCH's name).")
@click.option("--allow-new-alleles", is_flag=True,
              help="Add the new ALT alleles the batch brings to the store's sites in this commit.")
@lock_option
@threshold_options
@store_options
@dask_option
@progress_option
@click.pass_context
def append(ctx, store, batch, batch_id, allow_new_alleles, min_site_coverage, max_dropped_fraction,
           lock_timeout, storage_options, backend, dask_scheduler):
    """Append BATCH (a VCZ, best made with `convert --like STORE`) to STORE as one commit,
    after the checks of `check` (refused, store untouched, on any error finding)."""
    from vczstore_dagster.store import append_batch

    settings = _settings(ctx)
    result = append_batch(_open(ctx, store, storage_options, backend, lock_timeout), batch,
                          batch_id=batch_id, progress=settings.progress,
                          allow_new_alleles=allow_new_alleles,
                          thresholds=_thresholds(min_site_coverage, max_dropped_fraction),
                          dask_scheduler=dask_scheduler)
    for f in result.findings:
        if f.severity == "warning":
            click.echo(f"warning: {f.message}", err=True)
    click.echo(f"appended batch {result.batch_id}: samples {result.samples_before} → "
               f"{result.samples_after} (+{result.num_samples_added})")
    click.echo(f"chunks: {result.chunks_copied} copied ({_bytes(result.bytes_copied)}), "
               f"{result.chunks_reencoded} re-encoded; fast path: "
               f"{'yes' if result.fast_path else 'no'}")
    if result.snapshot_id:
        extra = f" after {result.attempts} attempts" if result.attempts > 1 else ""
        click.echo(f"snapshot: {result.snapshot_id}{extra}")
    _echo_cluster(result.cluster)
    click.echo(f"time: {result.seconds:.2f} s")


@cli.command()
@click.argument("store")
@click.argument("sample_ids", nargs=-1, metavar="SAMPLE...")
@click.option("--from-file", "from_file", type=click.File("r"), default=None, metavar="F",
              help="More sample ids, one a line ('-' for stdin; blank lines and #comments skipped).")
@lock_option
@store_options
@dask_option
@progress_option
@click.pass_context
def remove(ctx, store, sample_ids, from_file, lock_timeout, storage_options, backend,
           dask_scheduler):
    """Withdraw samples from STORE in one commit: their genotypes become missing values and their
    ids are hidden; a withdrawn id can never be appended again. Run `purge` next so that history
    and releases forget them too."""
    from vczstore_dagster.store.remove import parse_sample_list, remove_samples

    ids = list(sample_ids)
    if from_file is not None:
        ids += parse_sample_list(from_file.read())
    if not ids:
        raise click.UsageError("give at least one SAMPLE or --from-file F")

    settings = _settings(ctx)
    r = remove_samples(_open(ctx, store, storage_options, backend, lock_timeout), ids,
                       progress=settings.progress, dask_scheduler=dask_scheduler)
    click.echo(f"removed {r.num_removed} sample(s); {r.withdrawn_total} withdrawn in all")
    click.echo(f"rewritten: {r.columns_rewritten} sample-chunk column(s), {r.chunks_rewritten} "
               f"chunk(s); {r.attributes_scrubbed} attribute(s) scrubbed")
    if r.snapshot_id:
        click.echo(f"snapshot: {r.snapshot_id}")
    _echo_cluster(r.cluster)
    click.echo(f"time: {r.seconds:.2f} s")
    if r.snapshot_id:
        click.echo("history and releases keep them until `vczstore purge`")


@cli.command()
@click.argument("store")
@click.argument("field")
@click.argument("dtype", metavar="TYPE")
@lock_option
@store_options
@dask_option
@progress_option
@click.pass_context
def widen(ctx, store, field, dtype, lock_timeout, storage_options, backend, dask_scheduler):
    """Rewrite FORMAT field FIELD of STORE with the wider integer TYPE (int16, int32, int64) in one
    commit, so that batches with larger values (deeper coverage, say) fit. Icechunk stores only."""
    from vczstore_dagster.store.widen import widen_field

    settings = _settings(ctx)
    r = widen_field(_open(ctx, store, storage_options, backend, lock_timeout), field, dtype,
                    progress=settings.progress, dask_scheduler=dask_scheduler)
    click.echo(f"widened {r.field}: {r.old_dtype} → {r.new_dtype} ({r.chunks_rewritten} chunk(s))")
    click.echo(f"snapshot: {r.snapshot_id}")
    _echo_cluster(r.cluster)
    click.echo(f"time: {r.seconds:.2f} s")
    click.echo("convert batches --like the store again to use the new type")


@cli.command()
@click.argument("store")
@click.option("--grace", "grace", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="S3: how long a writer may run beside the purge; the purge waits for writers "
                   "in flight up to that age and takes older ones for dead (default: "
                   "VCZSTORE_PURGE_GRACE_SECONDS, else 3600).")
@click.option("--inbox", "inboxes", multiple=True, metavar="FOLDER",
              help="Also search FOLDER (an inbox or staging area: one batch per subfolder, local "
                   "or s3://) for batches still holding a withdrawn sample; repeatable.")
@click.option("--delete-leftovers", is_flag=True,
              help="Delete the batches --inbox finds (they could never be appended again).")
@lock_option
@store_options
@dask_option
@progress_option
@click.pass_context
def purge(ctx, store, grace, inboxes, delete_leftovers, lock_timeout, storage_options, backend,
          dask_scheduler):
    """Make STORE forget withdrawn samples: redact the releases that hold them (re-tagged as
    NAME-rN), then expire history and garbage-collect. Irreversible. Run it again if it was
    interrupted: it finishes what it started. With --inbox, name the batches left in those
    folders that still hold a withdrawn sample (and delete them with --delete-leftovers)."""
    from vczstore_dagster.store.leftovers import delete_leftovers as delete_found
    from vczstore_dagster.store.leftovers import find_leftovers
    from vczstore_dagster.store.location import (
        normalise_s3_options,
        s3_options_from_env,
        s3fs_kwargs,
    )
    from vczstore_dagster.store.purge import purge as purge_store

    settings = _settings(ctx)
    r = purge_store(_open(ctx, store, storage_options, backend, lock_timeout),
                    progress=settings.progress, grace_seconds=grace, dask_scheduler=dask_scheduler)
    for name in r.releases_completed:
        click.echo(f"completed release {name} (its tag had been interrupted)")
    for red in r.redacted:
        done = " (finished an interrupted redaction)" if red.resumed else ""
        click.echo(f"redacted release {red.release} → {red.replaced_by} "
                   f"({red.samples_removed} sample(s) removed; snapshot {red.snapshot_id}){done}")
    if not r.redacted:
        click.echo("no release needed redacting")
    if r.writers_waited_for or r.abandoned_branches_deleted:
        click.echo(f"writers in flight waited for: {r.writers_waited_for}; temporary branches of "
                   f"dead writers deleted: {r.abandoned_branches_deleted}")
    click.echo(f"expired {r.snapshots_expired} snapshot(s); deleted {r.chunks_deleted} chunk(s), "
               f"{r.objects_deleted} object(s), {_bytes(r.bytes_deleted)}"
               + (f"; cutoff {r.cutoff}" if r.cutoff else ""))
    _echo_cluster(r.cluster)
    click.echo(f"time: {r.seconds:.2f} s")
    opened = _open(ctx, store, storage_options, backend, lock_timeout)
    for folder in inboxes:
        options = (s3fs_kwargs(s3_options_from_env(normalise_s3_options(storage_options)))
                   if folder.startswith("s3://") else None)
        found = find_leftovers(opened, folder, storage_options=options)
        for leftover in found:
            click.echo(f"{folder}: batch {leftover.name} holds {leftover.withdrawn} withdrawn "
                       f"sample(s) in {leftover.files} file(s)"
                       + (": deleted" if delete_leftovers else ""))
        if found and delete_leftovers:
            delete_found(found, folder, storage_options=options)
        elif found:
            click.echo(f"{folder}: rerun with --delete-leftovers to delete them")
        else:
            click.echo(f"{folder}: no batch holds a withdrawn sample")


@cli.command()
@click.argument("store")
@click.argument("name")
@click.option("-m", "--message", default=None, help="A note kept with the release.")
@lock_option
@store_options
@click.pass_context
def tag(ctx, store, name, message, lock_timeout, storage_options, backend):
    """Tag the head of STORE as release NAME (immutable; Icechunk stores only). If a tag of NAME
    was interrupted after its commit, this tags that commit instead."""
    from vczstore_dagster.store import tag_release

    result = tag_release(_open(ctx, store, storage_options, backend, lock_timeout), name,
                         message=message)
    done = " (completed the interrupted release)" if result.completed else ""
    click.echo(f"release {result.name}: snapshot {result.snapshot_id}, "
               f"{result.active_samples} active samples, {len(result.batches)} batch(es){done}")


def _batch_list(batches: list[str]) -> str:
    if not batches:
        return "-"
    if len(batches) <= 3:
        return ",".join(batches)
    return f"{batches[0]}..{batches[-1]} ({len(batches)})"


@cli.command()
@click.argument("store")
@click.option("--notes", "notes_for", metavar="NAME",
              help="Print the Markdown release notes of release NAME instead of the list.")
@store_options
@click.pass_context
def releases(ctx, store, notes_for, storage_options, backend):
    """List the releases of STORE (with --notes NAME, that release's notes)."""
    from vczstore_dagster.store import list_releases

    opened = _open(ctx, store, storage_options, backend)
    if notes_for:
        from vczstore_dagster.store.release import release_notes

        click.echo(release_notes(opened, notes_for), nl=False)
        return
    found = list_releases(opened)
    if not found:
        note = " (plain Zarr stores have no releases)" if opened.backend == "zarr" else ""
        click.echo(f"no releases{note}")
        return
    rows = [[r.name, r.state, _short(r.snapshot_id), r.time or "-", str(r.active_samples),
             _batch_list(r.batches), r.replaces or "-", r.replaced_by or "-"] for r in found]
    click.echo(_table(rows, ["NAME", "STATE", "SNAPSHOT", "TIME", "ACTIVE", "BATCHES", "REPLACES",
                             "REPLACED_BY"]))
    for r in found:
        if not r.citable:
            click.echo(f"{r.name}: {_release_note(r)}")


def _release_note(release) -> str:
    """Why a release is not citable ("" when it is)."""
    if release.state == "replaced":
        when = f" on {release.redacted_at[:10]}" if release.redacted_at else ""
        return f"replaced by {release.replaced_by}{when}; not citable"
    if release.state == "incomplete":
        return f"incomplete: its tag was not made; run `vczstore tag` for {release.name} again"
    return ""


def _release_label(release) -> str:
    note = _release_note(release)
    return f"{release.name} ({note})" if note else release.name


@cli.command()
@click.argument("store")
@at_option
@store_options
@click.pass_context
def info(ctx, store, at, storage_options, backend):
    """Describe STORE at its head or at a release or snapshot."""
    from vczstore_dagster.store import store_info

    i = store_info(_open(ctx, store, storage_options, backend), at=at)
    lines = [
        ("store", f"{i.url} ({i.backend}, Zarr format {i.zarr_format})"),
        ("at", i.ref + (f" (snapshot {i.snapshot_id})" if i.snapshot_id else "")),
        ("variants", f"{i.num_variants} (chunks of {i.variants_chunk_size})"),
        ("samples", f"{i.num_samples} total, {i.num_active_samples} active "
                    f"(chunks of {i.samples_chunk_size})"),
        ("bytes", _bytes(i.bytes) + (" (all chunks in the repository)" if i.bytes else "")),
        ("arrays", f"{len(i.arrays)}: {', '.join(i.arrays)}"),
    ]
    if i.last_commit_message is not None:
        lines.append(("last commit", f"{i.last_commit_time}  {i.last_commit_message}"))
    lines.append(("releases", ", ".join(_release_label(r) for r in i.releases) or "-"))
    if i.stale_info_fields:
        lines.append(("stale INFO", ", ".join(i.stale_info_fields)
                      + " (out of date with the current samples)"))
    if i.fast_level is not None:
        lines.append(("fast level", _fast_level_line(i.fast_level, i.ref)))
    width = max(len(k) for k, _ in lines) + 1
    lists = ("arrays", "releases", "stale INFO", "fast level")  # a URL or a time is not wrapped
    for key, value in lines:
        label = (key + ":").ljust(width) + " "
        click.echo(textwrap.fill(value, width=100, initial_indent=label,
                                 subsequent_indent=" " * (width + 1), break_on_hyphens=False)
                   if key in lists else label + value)
    click.echo(f"batches: {len(i.batches)}" + ("" if i.batches else " (none)"))
    if i.batches:
        rows = [[b.batch_id, f"{b.sample_start}-{b.sample_stop - 1}" if b.num_samples else "-",
                 str(b.num_samples), b.appended_at] for b in i.batches]
        click.echo("  " + _table(rows, ["BATCH", "SAMPLES", "COUNT", "APPENDED"])
                   .replace("\n", "\n  "))


def _fast_level_line(report, ref: str) -> str:
    f = report
    if f.extra_bytes is None:
        cost = "cost unknown: no column at the store's level to compare with"
    elif f.extra_bytes <= 0:
        cost = "no cost measurable against the other columns"
    else:
        cost = (f"about +{_bytes(f.extra_bytes)} ({100 * f.extra_bytes / (f.bytes - f.extra_bytes):+.0f}%) "
                "over the store's level, estimated from the other columns")
    fix = "`vczstore recompress` re-encodes them" if ref == "main" else "kept by this release"
    return (f"{len(f.columns)} of {f.num_columns} sample-chunk column(s) written at the fast level "
            f"({_column_list(f.columns)}): {_bytes(f.bytes)}, {cost}; {fix}")


def _column_list(columns: list[int]) -> str:
    shown = ", ".join(map(str, columns[:8]))
    return shown + (f", ... ({len(columns) - 8} more)" if len(columns) > 8 else "")


@cli.command()
@click.argument("store")
@click.option("--column", "columns", type=click.IntRange(min=0), multiple=True, metavar="N",
              help="Only this sample-chunk column (repeatable); default: every column `info` "
                   "lists at the fast level.")
@store_options
@dask_option
@progress_option
@click.pass_context
def recompress(ctx, store, columns, storage_options, backend, dask_scheduler):
    """Re-encode the chunk columns that removals, redactions and appends wrote at the fast level
    of STORE's codec (see `info`) at the store's own level, in one commit: values unchanged,
    fewer bytes. Slow (the store's level is what costs); run it off the hot path."""
    from vczstore_dagster.store.recompress import recompress_store

    settings = _settings(ctx)
    r = recompress_store(_open(ctx, store, storage_options, backend), list(columns) or None,
                         progress=settings.progress, dask_scheduler=dask_scheduler)
    if not r.columns:
        click.echo("nothing to recompress: no column was written at the fast level")
        return
    click.echo(f"recompressed {len(r.columns)} sample-chunk column(s) ({_column_list(r.columns)}), "
               f"{r.chunks_rewritten} chunk(s): {_bytes(r.bytes_before)} → {_bytes(r.bytes_after)}")
    if r.columns_left:
        click.echo(f"still at the fast level: {_column_list(r.columns_left)}")
    if r.snapshot_id:
        click.echo(f"snapshot: {r.snapshot_id}")
    _echo_cluster(r.cluster)
    click.echo(f"time: {r.seconds:.2f} s")


def selection_options(f):
    """bcftools view's (and vcztools view's) regions, targets, samples and filters."""
    options = [
        ("-r", "--regions", "REGIONS", "Only these regions, comma-separated: CHROM, CHROM:POS or "
         "CHROM:FROM-TO (1-based, inclusive); uses the store's index."),
        ("-R", "--regions-file", "FILE", "Regions from FILE: CHROM<TAB>FROM<TAB>TO a line."),
        ("-t", "--targets", "[^]TARGETS", "Like --regions, scanning the records; ^ for all but "
         "these."),
        ("-T", "--targets-file", "[^]FILE", "Targets from FILE (as --regions-file)."),
        ("-s", "--samples", "[^]SAMPLES", "Only these samples, comma-separated, in this order; "
         "^ for all but these. Withdrawn samples are never shown."),
        ("-S", "--samples-file", "[^]FILE", "Samples from FILE, one ID a line."),
        ("-i", "--include", "EXPR", "Only records for which the bcftools expression is true."),
        ("-e", "--exclude", "EXPR", "Leave out records for which the bcftools expression is true."),
    ]
    for short, name, metavar, help_text in reversed(options):
        f = click.option(short, name, metavar=metavar, default=None, help=help_text)(f)
    return f


@cli.command()
@click.argument("store")
@at_option
@selection_options
@store_options
@click.pass_context
def view(ctx, store, at, storage_options, backend, **selection):
    """Write STORE (or a release, with --at) as VCF on stdout, restricted to regions, samples and
    records as `bcftools view` selects them; a sample subset gets its own AC and AN."""
    from vczstore_dagster.store.view import Selection, write_vcf

    chosen = Selection.parse(**selection)
    write_vcf(_open(ctx, store, storage_options, backend), sys.stdout, at=at, selection=chosen)
    sys.stdout.flush()


def run(argv: list[str] | None = None) -> int:
    """Run the group; return the exit code."""
    try:
        cli.main(args=argv, prog_name="vczstore", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        click.echo(str(code), err=True)
        return 1
    return 0


def main(argv: list[str] | None = None) -> NoReturn:
    """The console script. It leaves without the interpreter's finalisation: Icechunk's native
    threads can still call into Python then, which aborted `vczstore info` once in ~15 runs
    ("Fatal Python error: PyGILState_Release") after its work was done and printed."""
    code = run(argv)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # `vczstore view ... | head`
        pass
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":  # `python -m vczstore_dagster.cli`; also keeps spawned workers inert
    main()
