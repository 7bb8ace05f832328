from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from materials.management.commands._screening import add_screening_arguments, run_and_report
from materials.models import ScreeningBatch
from materials.screening.pipeline import create_amcsd_batch
from materials.screening.release import AMCSD_SOURCE


class Command(BaseCommand):
    help = (
        "Screen the AMCSD copy shipped inside larixite (9,275 CIFs of 4,118 minerals) as a release: every entry "
        "parsed (the unparseable ones listed with the reason), entries a catalogue already labels marked "
        "'known', every compound ranked by the composition + symmetry prior, and FEFF spectra computed for "
        "--feff-budget of them. --resume carries on the newest AMCSD screening instead of starting another."
    )

    def add_arguments(self, parser):
        add_screening_arguments(parser)
        parser.add_argument("--name", default="", help="a name for this screening (default: the AMCSD version)")
        parser.add_argument("--resume", action="store_true", help="carry on the newest AMCSD screening")

    def handle(
        self,
        *args,
        feff_budget: int,
        feff_max_sites: int | None,
        name: str,
        resume: bool,
        output: Path | None,
        **options,
    ):
        if resume:
            batch = ScreeningBatch.objects.filter(source=AMCSD_SOURCE).order_by("-created", "-id").first()
            if batch is None:
                raise CommandError("no AMCSD screening to resume; run without --resume first")
            ScreeningBatch.objects.filter(pk=batch.pk).update(
                feff_budget=max(feff_budget, batch.feff_budget), status="pending"
            )
            batch.refresh_from_db()
        else:
            batch = create_amcsd_batch(name, feff_budget=feff_budget, feff_max_sites=feff_max_sites)
        run_and_report(self, batch, output)
