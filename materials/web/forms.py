"""Forms of the pages: the candidate filters and the screening upload."""

from __future__ import annotations

import re

from django import forms
from django.conf import settings

from materials.learning.ranking import RankFilter
from materials.models import Material
from materials.web.figures import ATOMIC_NUMBER
from mlcore.decision import DECISIONS

CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")
# A candidate is a material no catalogue (nor a user) has labelled: the default view. Known
# materials, labelled ones, stay one choice away.
DEFAULT_LABEL_STATUS = "unlabelled"
LABEL_STATUS = (
    ("unlabelled", "unlabelled (candidates)"),
    ("all", "all materials"),
    ("labelled", "labelled (known)"),
    ("topological", "labelled topological"),
    ("trivial", "labelled trivial"),
)
_CANONICAL = {symbol.lower(): symbol for symbol in ATOMIC_NUMBER}


def parse_elements(text: str) -> list[str]:
    """Element symbols from free text ("Bi, se Te"), canonical and de-duplicated.

    Raises
    ------
    forms.ValidationError
        Naming every token that is not an element symbol.
    """
    tokens = [token for token in re.split(r"[\s,;]+", text.strip()) if token]
    unknown = [token for token in tokens if token.lower() not in _CANONICAL]
    if unknown:
        raise forms.ValidationError(
            "Not an element symbol: %(tokens)s. Separate symbols with commas or spaces, e.g. “Bi, Se”.",
            params={"tokens": ", ".join(unknown)},
            code="unknown_element",
        )
    return list(dict.fromkeys(_CANONICAL[token.lower()] for token in tokens))


class CandidateFilterForm(forms.Form):
    """Filters of /candidates/ (GET). Every field is optional; an empty form ranks the
    unlabelled materials (``label`` defaults to "unlabelled"; "all" ranks everything)."""

    include = forms.CharField(
        required=False,
        label="Contains all of",
        widget=forms.TextInput(attrs={"placeholder": "Bi, Se", "autocomplete": "off", "size": 10}),
    )
    exclude = forms.CharField(
        required=False,
        label="Contains none of",
        widget=forms.TextInput(attrs={"placeholder": "O, F", "autocomplete": "off", "size": 10}),
    )
    space_group = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=230,
        label="Space group no.",
        widget=forms.NumberInput(attrs={"placeholder": "1–230", "style": "width:6.5em"}),
    )
    crystal_system = forms.ChoiceField(
        required=False, choices=[("", "any")] + [(s, s) for s in CRYSTAL_SYSTEMS], label="Crystal system"
    )
    p_min = forms.FloatField(
        required=False,
        min_value=0.0,
        max_value=1.0,
        label="P(topological) ≥",
        widget=forms.NumberInput(attrs={"step": "0.05", "placeholder": "0", "style": "width:5.5em"}),
    )
    p_max = forms.FloatField(
        required=False,
        min_value=0.0,
        max_value=1.0,
        label="P(topological) ≤",
        widget=forms.NumberInput(attrs={"step": "0.05", "placeholder": "1", "style": "width:5.5em"}),
    )
    decision = forms.ChoiceField(
        required=False, choices=[("", "any")] + [(d, d) for d in DECISIONS], label="Decision (calibrated)"
    )
    label = forms.ChoiceField(required=False, choices=LABEL_STATUS, label="Label status")
    source = forms.ChoiceField(required=False, choices=[("", "any")] + list(Material.Source.choices), label="Source")

    def clean_label(self) -> str:
        return self.cleaned_data.get("label") or DEFAULT_LABEL_STATUS

    def clean_include(self) -> list[str]:
        return parse_elements(self.cleaned_data.get("include") or "")

    def clean_exclude(self) -> list[str]:
        return parse_elements(self.cleaned_data.get("exclude") or "")

    def clean(self):
        cleaned = super().clean()
        p_min, p_max = cleaned.get("p_min"), cleaned.get("p_max")
        if p_min is not None and p_max is not None and p_min > p_max:
            self.add_error("p_max", "The upper bound is below the lower bound.")
        both = set(cleaned.get("include") or []) & set(cleaned.get("exclude") or [])
        if both:
            self.add_error("exclude", f"{', '.join(sorted(both))} cannot be both required and excluded.")
        return cleaned

    def rank_filter(self) -> RankFilter:
        """The cleaned filters as the ranking's filter object."""
        data = self.cleaned_data
        bounds = {"probability_min": data.get("p_min"), "probability_max": data.get("p_max")}
        return RankFilter.from_values({**data, **bounds})

    @property
    def active(self) -> bool:
        """Whether any filter is set (for the empty-state message)."""
        return self.is_bound and any(
            value not in (None, "", []) for name, value in getattr(self, "cleaned_data", {}).items()
        )


class ScreeningUploadForm(forms.Form):
    """A named zip of CIFs (and optionally an ICSD metadata CSV) to screen, with a FEFF budget."""

    name = forms.CharField(max_length=200, help_text="A name you will recognise, e.g. “ICSD 2025.1 oxides”.")
    release = forms.FileField(
        label="Release (.zip of CIF files)",
        help_text="CIFs, optionally with an ICSD metadata CSV for the quality filter.",
        widget=forms.ClearableFileInput(attrs={"accept": ".zip,application/zip"}),
    )
    feff_budget = forms.IntegerField(
        label="FEFF budget",
        min_value=0,
        max_value=1000,
        initial=0,
        required=False,
        help_text="How many materials get FEFF spectra after the prior has ranked them all (the most uncertain "
        "first). FEFF takes minutes per element of a small structure; 0 ranks by the prior alone.",
    )

    def clean_feff_budget(self) -> int:
        return self.cleaned_data.get("feff_budget") or 0

    def clean_release(self):
        """Refuse a release the screening cannot read, before a batch exists: the screening
        package's reader decides (``read_upload``), with the API's and the command's message."""
        from materials.screening.release import ReleaseError, read_upload

        upload = self.cleaned_data["release"]
        try:
            release = read_upload(upload, settings.MAX_UPLOAD_BYTES)
        except ReleaseError as error:
            raise forms.ValidationError(str(error), code=error.code) from None
        self.n_cifs = len(release.cifs)
        return upload
