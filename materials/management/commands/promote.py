from django.core.management.base import BaseCommand, CommandError

from materials import jobs
from materials.models import ModelVersion, Status


class Command(BaseCommand):
    help = "Make a trained model version the (only) production model."

    def add_arguments(self, parser):
        parser.add_argument("model_version_id", type=int)

    def handle(self, *args, model_version_id, **options):
        if not ModelVersion.objects.filter(pk=model_version_id).exists():
            raise CommandError(f"no model version {model_version_id}")
        job = jobs.promote(model_version_id)
        if job.status != Status.DONE:
            raise CommandError(job.error)
        version = ModelVersion.objects.get(pk=model_version_id)
        self.stdout.write(self.style.SUCCESS(f"{version} is now in production"))
