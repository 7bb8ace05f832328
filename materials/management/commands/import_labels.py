from pathlib import Path

from django.core.management.base import CommandError

from materials.ingest.catalogues import CatalogueFormatError, RejectedRowsError, import_catalogue_file
from materials.management.commands._examples import ExamplesCommand
from materials.progress import StageProgress

EXAMPLES = """
File formats:
  materiae  CSV: materiae_id, formula, spacegroup, mp_id, icsd_ids, soc_topo_class, nsoc_topo_class
            (like data/labels/materiae_labels.csv; the class without SOC is kept as a tag NSOC:<class>)
  arsenal   one "spacegroup, formula" per line; the class is the file's: case1, case3, TCI or TI,
            told by the file name (*_case1*, *_case3*, *_tci*, *_ti*) or --raw-class
  tqc       CSV: icsd_id, formula, spacegroup, class (LCEBR, NLC, SEBR, ES, ESFD); mp_id optional

Raw classes are kept; each maps to topological/trivial (materials/ingest/labels.py). Re-importing a file
changes nothing. Rows that cannot be read are listed as file:line: reason and the others imported,
unless --strict. A file that cannot be read at all (not UTF-8, missing columns, no readable row)
stops the import with nothing stored.

Examples:
  manage.py import_labels --catalogue materiae data/labels/materiae_labels.csv
  manage.py import_labels --catalogue arsenal data/labels/arsenal_ti.txt
  manage.py import_labels --catalogue arsenal --raw-class case3 semimetals.txt --release "Arsenal 2019"
  manage.py import_labels --catalogue tqc tqc_icsd.csv --strict
"""


class Command(ExamplesCommand):
    help = "Import topology labels from a catalogue file (Materiae, Topological Materials Arsenal or TQC)."

    examples = EXAMPLES

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, help="the catalogue file")
        parser.add_argument("--catalogue", required=True, choices=["materiae", "arsenal", "tqc"])
        parser.add_argument(
            "--raw-class",
            choices=["case1", "case3", "TCI", "TI"],
            help="the class of every line of an Arsenal list whose file name does not tell it",
        )
        parser.add_argument("--release", help="provenance stored on each label (default: file name and its sha256)")
        parser.add_argument("--strict", action="store_true", help="any rejected row stops the import; nothing stored")
        parser.add_argument("--no-progress", action="store_true", help="do not draw a progress bar")

    def handle(self, *args, file: Path, catalogue: str, raw_class, release, strict: bool, no_progress: bool, **options):
        progress = StageProgress(enabled=not no_progress)
        try:
            result = import_catalogue_file(
                catalogue,
                file,
                release=release,
                raw_class=raw_class,
                strict=strict,
                progress=lambda done, total: progress("labels", done, total),
            )
        except RejectedRowsError as error:
            for rejection in error.rejected:
                self.stderr.write(f"  rejected {rejection}")
            raise CommandError(f"nothing was imported: {error}") from None
        except CatalogueFormatError as error:
            raise CommandError(f"nothing was imported: {error}") from None
        finally:
            progress.close()
        report = result.report
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {result.rows} {catalogue} rows from {file} (release {result.release!r}): "
                f"materials {report.materials_created} new; labels {report.labels_created} new, "
                f"{report.labels_updated} updated, {report.labels_unchanged} unchanged"
                + (f"; {report.unknown_class} rows with no class (no label)" if report.unknown_class else "")
            )
        )
        for key, count in result.classes.items():
            self.stdout.write(f"  {key}: {count}")
        if result.rejected:
            self.stdout.write(self.style.WARNING(f"{len(result.rejected)} row(s) rejected:"))
            for rejection in result.rejected:
                self.stdout.write(f"  {rejection}")
