import warnings
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from materials.models import Material, Spectrum


class Command(BaseCommand):
    help = (
        "Screen a small real release: mineral compounds from the AMCSD copy shipped in larixite that carry no "
        "Materiae label (real unlabelled candidates), small enough to compute their spectra with FEFF in minutes."
    )

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=4, help="how many minerals (default 4)")
        parser.add_argument("--max-sites", type=int, default=4, help="largest primitive cell (default 4 sites)")

    def handle(self, *args, count: int, max_sites: int, **options):
        folder = Path(settings.DATA_DIR) / "demo_release"
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.cif"):
            old.unlink()
        chosen = self.choose_minerals(count, max_sites)
        for amcsd_id, name, text in chosen:
            (folder / f"amcsd_{amcsd_id}.cif").write_text(text)
            self.stdout.write(f"  {name} (AMCSD {amcsd_id})")
        call_command("screen", str(folder), name="Demo: unlabelled AMCSD minerals", stdout=self.stdout)

    def choose_minerals(self, count: int, max_sites: int):
        """The first small, ordered, hydrogen-free minerals whose elements the model
        has seen and whose formula and space group match no catalogue entry."""
        from larixite.amcsd import get_amcsd
        from pymatgen.io.cif import CifParser
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        known = set(Material.objects.values_list("reduced_formula", "space_group_number"))
        trained_elements = set(
            Spectrum.objects.filter(material__has_spectra=True, material__label__in=["topological", "trivial"])
            .values_list("element", flat=True)
            .distinct()
        )
        chosen = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for entry in get_amcsd().find_cifs(full_occupancy=True, max_matches=5000):
                if _has_hydrogen(str(entry.formula)):
                    continue  # hydrogen positions are rarely refined; the bundled set excludes it too
                try:
                    structure = CifParser.from_str(entry.ciftext).parse_structures(primitive=True)[0]
                except Exception:  # many old CIFs do not parse; skip them
                    continue
                elements = {el.symbol for el in structure.composition.elements}
                if len(structure) > max_sites or not structure.is_ordered or not elements <= trained_elements:
                    continue
                number = SpacegroupAnalyzer(structure, symprec=0.1).get_space_group_number()
                if (structure.composition.reduced_formula, number) in known:
                    continue
                chosen.append((entry.ams_id, entry.get_mineralname(), entry.ciftext))
                known.add((structure.composition.reduced_formula, number))
                if len(chosen) == count:
                    break
        return chosen


def _has_hydrogen(formula: str) -> bool:
    from pymatgen.core import Composition

    try:
        return any(el.symbol == "H" for el in Composition(formula.replace(" ", "")).elements)
    except Exception:  # an unparseable formula: treat as unusable
        return True
