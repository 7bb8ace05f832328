from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from materials.ingest.bundled import DEFAULT_DATA_DIR, BundledDataError, load_bundled
from materials.models import TopologyLabel
from materials.progress import StageProgress


class Command(BaseCommand):
    help = (
        "Load the bundled real dataset (Materiae and Arsenal labels, mineral structures, FEFF spectra, "
        "reference and measured spectra). Idempotent: a second run changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="folder laid out like data/")
        parser.add_argument("--no-progress", action="store_true", help="do not draw progress bars")

    def handle(self, *args, data_dir: Path, no_progress: bool, **options):
        if not data_dir.is_dir():
            raise CommandError(f"{data_dir}: no such folder")
        progress = StageProgress(enabled=not no_progress)
        try:
            report = load_bundled(data_dir, progress=progress)
        except BundledDataError as error:
            raise CommandError(f"nothing was loaded: {error}") from None
        finally:
            progress.close()
        self.stdout.write(self.style.SUCCESS(f"Loaded {report.line()}"))
        by_class = TopologyLabel.objects.label_counts()
        for (catalogue, raw_class, binary), count in sorted(by_class.items()):
            self.stdout.write(f"  {catalogue:9s} {raw_class:9s} {binary:12s} {count}")
