import time

from django.core.management.base import BaseCommand, CommandError

from materials import jobs
from materials.models import ModelVersion


class Command(BaseCommand):
    help = "Predict every material that lacks a prediction from the production model (or --model ID)."

    def add_arguments(self, parser):
        parser.add_argument("--model", type=int, help="model version id (default: production)")
        parser.add_argument("--chunk-size", type=int, default=10_000)

    def handle(self, *args, model, chunk_size, **options):
        version = ModelVersion.objects.filter(pk=model).first() if model else ModelVersion.objects.production()
        if version is None:
            raise CommandError("no such model" if model else "no production model; promote one first")
        job = jobs.start_classify_all(version, chunk_size=chunk_size)
        while True:
            job.refresh_from_db()
            if job.is_finished:
                break
            time.sleep(1)
        if job.status == "failed":
            raise CommandError(f"classification failed: {job.error}")
        self.stdout.write(
            self.style.SUCCESS(
                f"{job.result.get('predicted', 0)} new predictions from {version} "
                f"in {job.result.get('chunks', 0)} chunks"
            )
        )
