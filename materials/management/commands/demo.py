import secrets
import time
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from materials.models import Material

#: Materials the demo's screening computes FEFF spectra for (the most uncertain priors first),
#: among structures of at most DEMO_FEFF_MAX_SITES sites, so FEFF takes a minute or two.
DEMO_FEFF_BUDGET = 3
DEMO_FEFF_MAX_SITES = 4


class Command(BaseCommand):
    help = "The embedded demo: load the bundled data, train, screen, and create an admin login."

    def add_arguments(self, parser):
        parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the model's)")
        parser.add_argument(
            "--url", default="http://127.0.0.1:8000/", help="where the site will be served (printed at the end)"
        )
        # For a quick run of the same steps (CI's tests/test_demo.py): a smaller data folder,
        # fewer epochs, no FEFF.
        parser.add_argument(
            "--data-dir", type=Path, default=None, help="a folder laid out like data/ (default: the bundled data)"
        )
        parser.add_argument(
            "--feff-budget",
            type=int,
            default=DEMO_FEFF_BUDGET,
            help=f"AMCSD minerals the screening computes FEFF spectra for (default {DEMO_FEFF_BUDGET}; 0: none)",
        )

    def handle(self, *args, epochs, url, data_dir=None, feff_budget=DEMO_FEFF_BUDGET, **options):
        if feff_budget < 0:
            raise CommandError(f"--feff-budget must be 0 or more, got {feff_budget}")
        self.feff_budget = feff_budget
        load_options = {"data_dir": data_dir} if data_dir else {}
        timings = {}

        def step(name, function):
            started = time.perf_counter()
            self.stdout.write(self.style.MIGRATE_HEADING(f"==> {name}"))
            function()
            timings[name] = time.perf_counter() - started

        step("load bundled data", lambda: call_command("load_bundled", stdout=self.stdout, **load_options))
        for name, command in self.pipeline_steps(epochs):
            step(name, command)
        password = self.ensure_admin()
        self.stdout.write(self.style.MIGRATE_HEADING("==> timings"))
        for name, seconds in timings.items():
            self.stdout.write(f"  {name:28s} {seconds:7.1f} s")
        count = Material.objects.count()
        self.stdout.write(
            self.style.SUCCESS(
                f"\n{count} materials loaded. Open {url} "
                f"(admin: {url.rstrip('/')}/admin/ user 'admin', password {password!r})"
            )
        )

    def pipeline_steps(self, epochs):
        """Train every model kind on one split and promote the best by validation score,
        classify every material, screen a small real release."""
        options = {"kind": "all", "promote_after": True}
        if epochs:
            options["epochs"] = epochs
        return [
            ("train every model kind", lambda: call_command("train", stdout=self.stdout, **options)),
            ("classify every material", lambda: call_command("classify_all", stdout=self.stdout)),
            (
                f"screen the AMCSD (9,275 CIFs), FEFF for {self.feff_budget}",
                lambda: call_command(
                    "screen_amcsd",
                    feff_budget=self.feff_budget,
                    feff_max_sites=DEMO_FEFF_MAX_SITES,
                    stdout=self.stdout,
                ),
            ),
        ]

    def ensure_admin(self) -> str:
        """Create (or reset) the demo superuser with a fresh random password."""
        password = secrets.token_urlsafe(9)
        user, _ = get_user_model().objects.get_or_create(username="admin", defaults={"email": "admin@localhost"})
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        return password
