"""``load_bundled`` on the whole of ``data/``: the counts ``data/README.md`` states.

The expected counts live in ``STATED`` below, one place: when the bundled data grows,
update ``data/README.md`` and these numbers together. The test also checks that each
number is written in ``data/README.md`` (as "28,605" or "393"), so the two cannot drift.
About half a minute on 2 cores (the Materiae catalogue is 28,605 rows).
"""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command

from materials.models import Material, Spectrum, TopologyLabel
from tests.conftest import DATA

#: What data/README.md states, and where.
STATED = {
    # table row `labels/materiae_labels.csv`: "28,605 materials with their topology class"
    "materiae_rows": 28_605,
    # table row `spectra/selection.csv`: "1,319 hydrogen-free mineral compounds"
    "selection_rows": 1_319,
    # "`load_bundled` on a fresh database: ... 1,759 spectra (1,757 FEFF, ...)": every spectra*.jsonl line
    # (anatase, mp-390, now has its own FEFF Ti spectrum from the prototype run, which takes the place of
    # Lightshow's FEFF reference: one FEFF spectrum per material and element)
    "feff_spectra": 1_757,
    # "... 701 usable materials (`has_spectra` and labelled), 359 topological and 342 trivial"
    "usable": 701,
    "usable_topological": 359,
    "usable_trivial": 342,
}


def stated_in_readme(number: int) -> bool:
    text = (DATA / "README.md").read_text()
    return re.search(rf"(?<![\d,]){number:,}(?![\d,])", text) is not None or f"{number}" in text.split()


@pytest.mark.django_db
def test_loading_all_the_bundled_data_gives_the_counts_the_data_readme_states():
    missing = [name for name, number in STATED.items() if not stated_in_readme(number)]
    assert missing == [], f"data/README.md no longer states these counts: {missing}; update STATED"

    call_command("load_bundled", "--no-progress", stdout=None)

    usable = Material.objects.filter(has_spectra=True, label__in=["topological", "trivial"])
    loaded = {
        "materiae_rows": Material.objects.exclude(materiae_id=None).count(),
        "selection_rows": STATED["selection_rows"],  # checked below: structures placed, at most one per row
        "feff_spectra": Spectrum.objects.filter(source=Spectrum.Source.FEFF).count(),
        "usable": usable.count(),
        "usable_topological": usable.filter(label="topological").count(),
        "usable_trivial": usable.filter(label="trivial").count(),
    }
    assert loaded == STATED, "loaded counts differ from data/README.md's (STATED)"
    assert 0 < Material.objects.filter(structure_source="amcsd").count() <= STATED["selection_rows"]
    # Every usable material has a spectrum of each of its elements (the paper's rule).
    for material in usable.prefetch_related("spectra")[:50]:
        assert set(material.elements) <= {spectrum.element for spectrum in material.spectra.all()}
    assert TopologyLabel.objects.filter(catalogue="materiae").count() <= STATED["materiae_rows"]
