"""Query filters (django-filter). Every value is validated: a bad one is a 400 naming
the parameter, never a 500 and never a silently ignored filter."""

from __future__ import annotations

import django_filters
import django_filters.fields
from django import forms
from django.db.models import Q, Subquery
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema_field
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter

from materials.learning.ranking import RankFilter
from materials.models import BINARY_CLASSES, Material, ModelVersion, Prediction, Spectrum, TopologyLabel
from mlcore.decision import DECISIONS
from mlcore.elements import ELEMENTS
from mlcore.symmetry import CRYSTAL_SYSTEMS

MAX_ID = 2**62
LABEL_CHOICES = [*BINARY_CLASSES, ("unlabelled", "Unlabelled")]
#: A ranking's label scope (``materials.learning.ranking.LABEL_SCOPES``).
SCOPE_CHOICES = [*LABEL_CHOICES, ("labelled", "Labelled"), ("all", "All")]
DECISION_CHOICES = [(decision, decision) for decision in DECISIONS]
ELEMENT_LIST_SCHEMA = {
    "type": "string",
    "description": "Element symbols separated by commas (e.g. ``Co,O``); every one must be in the material.",
    "example": "Co,O",
}


class ElementListField(forms.CharField):
    """ "Co,O" → ["Co", "O"]; unknown symbols are a validation error naming them."""

    def __init__(self, *args, max_elements: int = 10, **kwargs):
        self.max_elements = max_elements
        kwargs.setdefault("max_length", 200)
        super().__init__(*args, **kwargs)

    def clean(self, value):
        value = super().clean(value)
        if not value:
            return []
        symbols = [part.strip() for part in value.split(",") if part.strip()]
        unknown = [symbol for symbol in symbols if symbol not in ELEMENTS]
        if unknown:
            # User input goes in as a parameter: django-filter %-formats the message.
            raise forms.ValidationError(
                "unknown element symbol(s): %(symbols)s", params={"symbols": ", ".join(unknown[:5])[:100]}
            )
        if len(symbols) > self.max_elements:
            raise forms.ValidationError(f"at most {self.max_elements} elements")
        return sorted(set(symbols))


class ElementListFilter(django_filters.Filter):
    field_class = ElementListField

    def filter(self, qs, value):
        for symbol in value or []:
            qs = qs.filter(**{f"{self.field_name}__contains": f"-{symbol}-"})
        return qs


class RejectEmptyMixin:
    """A parameter given empty (``?space_group=``) is an error, not "no filter": an empty
    string is not a number, a boolean or one of the choices. Absent stays "no filter"."""

    def clean(self, value):
        if isinstance(value, str) and not value.strip():
            raise forms.ValidationError("empty value; leave the parameter out to not filter on it")
        return super().clean(value)


class StrictChoiceField(RejectEmptyMixin, django_filters.fields.ChoiceField):
    pass


class StrictChoiceFilter(django_filters.ChoiceFilter):
    field_class = StrictChoiceField


class StrictIntegerField(RejectEmptyMixin, forms.IntegerField):
    pass


class StrictFloatField(RejectEmptyMixin, forms.FloatField):
    pass


class StrictBooleanField(RejectEmptyMixin, forms.Field):
    """``true``/``false`` (or 1/0, yes/no); anything else is a validation error, not "no filter"."""

    VALUES = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}

    def to_python(self, value):
        if value is None:
            return None
        try:
            return self.VALUES[str(value).strip().lower()]
        except KeyError:
            raise forms.ValidationError("expected true or false") from None


@extend_schema_field({"type": "boolean"})
class StrictBooleanFilter(django_filters.Filter):
    field_class = StrictBooleanField


class IntegerFilter(django_filters.NumberFilter):
    field_class = StrictIntegerField


class FloatFilter(django_filters.NumberFilter):
    field_class = StrictFloatField


def bounded_int(minimum: int, maximum: int, description: str = "") -> dict:
    schema = {"type": "integer", "minimum": minimum, "maximum": maximum}
    if description:
        schema["description"] = description
    return schema


def label_filter(field_name: str):
    def apply(queryset, name, value):
        if not value:
            return queryset
        return queryset.filter(**{field_name: "" if value == "unlabelled" else value})

    return apply


class MaterialFilter(django_filters.FilterSet):
    elements = extend_schema_field(ELEMENT_LIST_SCHEMA)(ElementListFilter(field_name="elements_key"))
    space_group = extend_schema_field(bounded_int(1, 230, "Space group number (1-230)."))(
        IntegerFilter(field_name="space_group_number", min_value=1, max_value=230)
    )
    crystal_system = StrictChoiceFilter(choices=[(c, c) for c in CRYSTAL_SYSTEMS])
    label = StrictChoiceFilter(
        choices=LABEL_CHOICES, method="filter_label", help_text="Training label; ``unlabelled`` for none."
    )
    source = StrictChoiceFilter(choices=Material.Source.choices)
    has_spectra = StrictBooleanFilter()
    formula = django_filters.CharFilter(
        field_name="reduced_formula", max_length=200, help_text="Exact reduced formula, e.g. ``LiCoO2``."
    )
    search = django_filters.CharFilter(
        method="filter_search",
        max_length=200,
        help_text="Case-insensitive substring of the formula or reduced formula.",
    )

    class Meta:
        model = Material
        fields = []

    def filter_label(self, queryset, name, value):
        return label_filter("label")(queryset, name, value)

    def filter_search(self, queryset, name, value):
        if not value:
            return queryset
        return queryset.filter(Q(reduced_formula__icontains=value) | Q(formula__icontains=value))


class SpectrumFilter(django_filters.FilterSet):
    material = extend_schema_field(bounded_int(1, MAX_ID))(
        IntegerFilter(field_name="material_id", min_value=1, max_value=MAX_ID)
    )
    element = StrictChoiceFilter(choices=[(e, e) for e in ELEMENTS])
    source = StrictChoiceFilter(choices=Spectrum.Source.choices)

    class Meta:
        model = Spectrum
        fields = []


class LabelFilter(django_filters.FilterSet):
    material = extend_schema_field(bounded_int(1, MAX_ID))(
        IntegerFilter(field_name="material_id", min_value=1, max_value=MAX_ID)
    )
    catalogue = StrictChoiceFilter(choices=TopologyLabel.Catalogue.choices)
    binary_class = StrictChoiceFilter(choices=BINARY_CLASSES)

    class Meta:
        model = TopologyLabel
        fields = []


class ModelVersionFilter(django_filters.FilterSet):
    kind = StrictChoiceFilter(choices=ModelVersion.Kind.choices)
    status = StrictChoiceFilter(choices=ModelVersion.State.choices)
    is_production = StrictBooleanFilter()

    class Meta:
        model = ModelVersion
        fields = []


def production_model_id():
    """The production model's id as a subquery: the prediction query stays one query,
    and PostgreSQL evaluates it once (an InitPlan) before the index scan."""
    return Subquery(ModelVersion.objects.filter(is_production=True).order_by().values("id")[:1])


class PredictionFilter(django_filters.FilterSet):
    """The ranking's filters as query parameters; ``rank_filter`` turns them into the
    ``materials.learning.ranking.RankFilter`` the page and the screenings use too."""

    model = extend_schema_field(bounded_int(1, MAX_ID, "Model version id; the production model when omitted."))(
        IntegerFilter(field_name="model_version_id", min_value=1, max_value=MAX_ID)
    )
    probability_min = extend_schema_field(
        {"type": "number", "minimum": 0, "maximum": 1, "description": "Raw P(topological) at least this."}
    )(FloatFilter(field_name="probability", lookup_expr="gte", min_value=0.0, max_value=1.0))
    probability_max = extend_schema_field(
        {"type": "number", "minimum": 0, "maximum": 1, "description": "Raw P(topological) at most this."}
    )(FloatFilter(field_name="probability", lookup_expr="lte", min_value=0.0, max_value=1.0))
    element = extend_schema_field(ELEMENT_LIST_SCHEMA)(ElementListFilter(field_name="material__elements_key"))
    exclude_element = extend_schema_field(
        {**ELEMENT_LIST_SCHEMA, "description": "Element symbols separated by commas; none may be in the material."}
    )(ElementListFilter(field_name="material__elements_key"))
    label = StrictChoiceFilter(
        choices=SCOPE_CHOICES,
        help_text="The material's training label: ``unlabelled`` for materials without one (the candidates), "
        "``labelled`` for any label, ``all`` (the default) for every material.",
    )
    predicted_class = StrictChoiceFilter(choices=BINARY_CLASSES)
    decision = StrictChoiceFilter(
        choices=DECISION_CHOICES, help_text="The decision from the calibrated probability and the model's band."
    )
    space_group = extend_schema_field(bounded_int(1, 230, "Space group number (1-230)."))(
        IntegerFilter(field_name="material__space_group_number", min_value=1, max_value=230)
    )
    crystal_system = StrictChoiceFilter(choices=[(c, c) for c in CRYSTAL_SYSTEMS])
    source = StrictChoiceFilter(choices=Material.Source.choices, help_text="Where the material came from.")

    class Meta:
        model = Prediction
        fields = []

    @classmethod
    def defaults(cls, queryset):
        """What applies when no parameter is given: the production model's predictions."""
        return queryset.filter(model_version_id=production_model_id())


def rank_filter(cleaned: dict, default_label: str = "all") -> RankFilter:
    """Cleaned ``PredictionFilter`` (or screening row) parameters as the ranking's filter. The
    API's default label scope is every material (``all``); the page's is the candidates."""
    elements = {"include": cleaned.get("element"), "exclude": cleaned.get("exclude_element")}
    return RankFilter.from_values({**cleaned, **elements}, default_label)


class FilterBackend(DjangoFilterBackend):
    """django-filter, with a fast path: a request without any of the filter set's
    parameters gets the filter set's ``defaults`` and skips building the form (a deep
    copy of every filter and a new form class per request, most of a plain page's cost)."""

    def filter_queryset(self, request, queryset, view):
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is not None and not any(
            name in request.query_params for name in filterset_class.base_filters
        ):
            defaults = getattr(filterset_class, "defaults", None)
            return defaults(queryset) if defaults is not None else queryset
        return super().filter_queryset(request, queryset, view)


class StableOrderingFilter(OrderingFilter):
    """``?ordering=probability`` or ``-probability``; ``id`` is always the tie-break, so
    cursor pages are stable among equal probabilities."""

    def get_ordering(self, request, queryset, view):
        requested = request.query_params.get(self.ordering_param)
        if requested is not None:
            allowed = set(getattr(view, "ordering_fields", None) or [])
            unknown = [term for term in requested.split(",") if term.strip().lstrip("-") not in allowed]
            if unknown:
                choices = ", ".join(f"{name}, -{name}" for name in sorted(allowed))
                raise ValidationError({self.ordering_param: [f"unknown ordering {unknown[0][:40]!r}; use {choices}"]})
        ordering = list(super().get_ordering(request, queryset, view) or [])
        if not any(term.lstrip("-") == "id" for term in ordering):
            ordering.append("id")
        return tuple(ordering)


__all__ = [
    "LabelFilter",
    "MaterialFilter",
    "ModelVersionFilter",
    "PredictionFilter",
    "SpectrumFilter",
    "StableOrderingFilter",
]
