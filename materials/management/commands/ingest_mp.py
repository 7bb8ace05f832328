import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError

from materials import jobs
from materials.ingest import mp, mp_documents, mp_http, mp_store
from materials.ingest.catalogues import CatalogueFormatError, read_text
from materials.ingest.icsd_quality import read_icsd_metadata
from materials.management.commands._examples import ExamplesCommand
from materials.models import Job, Status
from materials.progress import StageProgress

EXAMPLES = """
Fetches, for each material, the K-edge XANES of every element from the Materials Project's XAS
endpoint (element spectra, site-averaged) and the structure and symmetry from its summary, with
the official mp-api client. A material is stored only if every element has a spectrum. Requests
go in chunks, throttled below MP's limit of ~25 requests/s, and are retried with backoff on 429
and 5xx. Each material is stored in its own transaction: Ctrl-C or a crash loses nothing, and
running the same command again skips what is stored and carries on.

The API key comes from MP_API_KEY, the server from MP_API_ENDPOINT (default
https://api.materialsproject.org/). With CELERY_BROKER_URL set the work is queued as a Job on the
"ingest" queue and this command shows its progress (Ctrl-C stops watching, not the job); without
a broker, or with --in-process, it runs here.

Examples:
  export MP_API_KEY=<your 32-character key>
  manage.py ingest_mp --mp-ids mp-2657 mp-390 mp-24850
  manage.py ingest_mp --from-file ids.txt          # one mp-id or ICSD id per line, # comments
  manage.py ingest_mp --icsd-ids 16636 9852        # ICSD ids mapped to mp-ids by stored catalogues
  manage.py ingest_mp --from-labels --limit 500    # labelled materials still lacking MP spectra
  manage.py ingest_mp --from-labels --icsd-metadata icsd.csv   # plus the paper's ICSD quality filter
"""


def split_ids(values) -> list[str]:
    """``["mp-1,mp-2", "mp-3"]`` → ``["mp-1", "mp-2", "mp-3"]``."""
    return [part.strip() for value in values or [] for part in str(value).split(",") if part.strip()]


class Command(ExamplesCommand):
    help = "Ingest Materials Project K-edge XANES, structures and symmetry for materials by mp-id or ICSD id."

    examples = EXAMPLES

    def add_arguments(self, parser):
        source = parser.add_argument_group("which materials (any combination)")
        source.add_argument("--mp-ids", nargs="+", metavar="MP_ID", help="mp-ids, space- or comma-separated")
        source.add_argument("--icsd-ids", nargs="+", metavar="ICSD_ID", help="ICSD ids of stored materials")
        source.add_argument("--from-file", type=Path, metavar="FILE", help="a file of mp-ids and/or ICSD ids")
        source.add_argument(
            "--from-labels", action="store_true", help="stored materials with an mp-id and a catalogue label"
        )
        source.add_argument("--limit", type=int, help="fetch at most this many materials (after skipping stored ones)")
        how = parser.add_argument_group("how")
        how.add_argument("--chunk-size", type=int, help=f"materials per request (default {mp_http.DEFAULT_CHUNK_SIZE})")
        how.add_argument(
            "--rate",
            type=float,
            help=f"requests per second (default {mp_http.DEFAULT_REQUESTS_PER_SECOND:g}, "
            f"at most {mp_http.MP_RATE_LIMIT_PER_SECOND:g})",
        )
        how.add_argument("--max-retries", type=int, help="retries of a request on 429, 5xx or a lost connection")
        how.add_argument("--backoff", type=float, help="seconds before the first retry; doubles each time (default 1)")
        how.add_argument(
            "--icsd-metadata", type=Path, metavar="CSV", help="ICSD metadata: apply the paper's ICSD quality filter"
        )
        how.add_argument("--in-process", action="store_true", help="run here even when a Celery broker is configured")
        how.add_argument("--queue", help="Celery queue to send the job to (default: the ingest queue)")
        how.add_argument("--no-wait", action="store_true", help="queue the job and return without watching it")
        how.add_argument("--wait-timeout", type=float, metavar="SECONDS", help="stop watching the job after this long")
        how.add_argument("--no-progress", action="store_true", help="do not draw a progress bar")

    def handle(self, *args, **options):
        mp_ids = self.collect_ids(options)
        if options["icsd_metadata"]:
            self.read_metadata(options["icsd_metadata"])  # fail here, not later in a worker
        try:
            config = mp_http.IngestConfig.from_settings(
                chunk_size=options["chunk_size"],
                requests_per_second=options["rate"],
                max_retries=options["max_retries"],
                backoff_seconds=options["backoff"],
            )
        except mp_http.MPConfigurationError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"{len(mp_ids)} materials to ingest from {config.endpoint}")
        if settings.CELERY_BROKER_URL and not options["in_process"]:
            self.run_queued(mp_ids, config, options)
        else:
            self.run_here(mp_ids, config, options)

    # -- inputs ------------------------------------------------------------------

    def collect_ids(self, options) -> list[str]:
        mp_ids, icsd_ids, problems = [], [], []
        for value in split_ids(options["mp_ids"]):
            try:
                mp_ids.append(mp_documents.normalize_mp_id(value))
            except ValueError as error:
                problems.append(str(error))
        for value in split_ids(options["icsd_ids"]):
            try:
                icsd_ids.append(mp_documents.parse_icsd_id(value))
            except ValueError as error:
                problems.append(str(error))
        if options["from_file"]:
            try:
                text = read_text(options["from_file"])
            except (OSError, CatalogueFormatError) as error:
                raise CommandError(f"cannot read {options['from_file']}: {error}") from None
            found_mp, found_icsd, file_problems = mp_documents.parse_id_lines(text)
            mp_ids += found_mp
            icsd_ids += found_icsd
            problems += [f"{options['from_file']}: {problem}" for problem in file_problems]
        if problems:
            raise CommandError("unusable ids:\n  " + "\n  ".join(problems))
        if icsd_ids:
            mapping, unmapped = mp_store.mp_ids_for_icsd(icsd_ids)
            mp_ids += [mapping[i] for i in icsd_ids if i in mapping]
            self.stdout.write(f"{len(mapping)} of {len(set(icsd_ids))} ICSD ids map to stored mp-ids")
            if unmapped:
                shown = ", ".join(str(i) for i in unmapped[:20]) + (" …" if len(unmapped) > 20 else "")
                self.stdout.write(
                    self.style.WARNING(
                        f"{len(unmapped)} ICSD ids have no stored material with an mp-id (import a catalogue "
                        f"that lists them, e.g. Materiae): {shown}"
                    )
                )
        if options["from_labels"]:
            mp_ids += mp_store.mp_ids_from_labels()
        mp_ids = list(dict.fromkeys(mp_ids))
        if not mp_ids:
            raise CommandError("no materials to ingest: give --mp-ids, --icsd-ids, --from-file or --from-labels")
        return mp_ids

    def read_metadata(self, path: Path) -> dict:
        try:
            metadata, rejected = read_icsd_metadata(path)
        except (OSError, CatalogueFormatError) as error:
            raise CommandError(f"cannot read the ICSD metadata: {error}") from None
        for rejection in rejected:
            self.stdout.write(self.style.WARNING(f"  ICSD metadata row skipped: {rejection}"))
        return metadata

    # -- running -----------------------------------------------------------------

    def run_here(self, mp_ids: list[str], config, options) -> None:
        metadata = self.read_metadata(options["icsd_metadata"]) if options["icsd_metadata"] else None
        progress = StageProgress(enabled=not options["no_progress"])
        ingestion = mp.MPIngestion(config, progress=progress, icsd_metadata=metadata)
        try:
            report = ingestion.run(mp_ids, limit=options["limit"])
        except KeyboardInterrupt:
            progress.close()
            self.print_report(ingestion.report)
            raise CommandError(
                "interrupted; every material stored so far is kept: run the same command again to carry on",
                returncode=130,
            ) from None
        except mp_http.MPIngestError as error:
            progress.close()
            self.print_report(ingestion.report)
            raise CommandError(f"{error}\nMaterials stored before this are kept; re-run to carry on.") from None
        progress.close()
        self.print_report(report)

    def run_queued(self, mp_ids: list[str], config, options) -> None:
        parameters = {"mp_ids": mp_ids, "options": config.options(), "limit": options["limit"]}
        if options["icsd_metadata"]:
            parameters["icsd_metadata"] = str(options["icsd_metadata"].resolve())
        job = jobs.start_ingest_mp(parameters, queue=options["queue"])
        queue = options["queue"] or "ingest"
        self.stdout.write(f"Queued job #{job.pk} on the {queue!r} queue")
        if options["no_wait"]:
            return
        self.watch(job, len(mp_ids), options)

    def watch(self, job: Job, total: int, options) -> None:
        progress = StageProgress(enabled=not options["no_progress"])
        started, hinted = time.monotonic(), False
        try:
            while True:
                job.refresh_from_db()
                if job.is_finished:
                    break
                if options["wait_timeout"] and time.monotonic() - started > options["wait_timeout"]:
                    progress.close()
                    raise CommandError(
                        f"job #{job.pk} is still {job.status} after {options['wait_timeout']:g} s; it carries on "
                        "in the worker"
                    )
                if job.status == Status.PENDING and not hinted and time.monotonic() - started > 30:
                    hinted = True
                    self.stdout.write(f"Job #{job.pk} is still pending: is a worker consuming the ingest queue?")
                progress("materials", round(job.progress * total), total)
                time.sleep(0.5)
        except KeyboardInterrupt:
            progress.close()
            self.stdout.write(f"Stopped watching; job #{job.pk} carries on in the worker.")
            return
        progress.close()
        if job.status == Status.FAILED:
            raise CommandError(f"job #{job.pk} failed: {job.error}\nMaterials stored before this are kept.")
        self.print_report(job.result)

    def print_report(self, report) -> None:
        values = report.as_dict() if hasattr(report, "as_dict") else dict(report or {})
        if not values:
            return
        line = mp.IngestReport(**{k: v for k, v in values.items() if k != "http"}).line()
        self.stdout.write(self.style.SUCCESS(f"Materials Project {values.get('db_version') or '?'}: {line}"))
        for mp_id, reason in values.get("excluded", {}).items():
            self.stdout.write(f"  excluded {mp_id}: {reason}")
        for mp_id in values.get("not_found", []):
            self.stdout.write(f"  not found {mp_id}: no summary document in the Materials Project")
        http = values.get("http") or {}
        if http.get("requests"):
            statuses = ", ".join(f"{code} ×{count}" for code, count in http.get("statuses", {}).items())
            self.stdout.write(f"  HTTP: {http['requests']} requests, {http.get('retries', 0)} retried ({statuses})")
