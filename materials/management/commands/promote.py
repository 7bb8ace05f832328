from django.core.management.base import BaseCommand, CommandError

from materials.training import promote


class Command(BaseCommand):
    help = "Make a trained model version the (only) production model."

    def add_arguments(self, parser):
        parser.add_argument("model_version_id", type=int)

    def handle(self, *args, model_version_id, **options):
        from materials.models import ModelVersion

        try:
            version = promote(model_version_id)
        except ModelVersion.DoesNotExist:
            raise CommandError(f"no model version {model_version_id}") from None
        except ValueError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(self.style.SUCCESS(f"{version} is now in production"))
