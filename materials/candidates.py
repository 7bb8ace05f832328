"""The candidate ranking: materials by P(topological) from one model, filtered.

Fast at 300,000 predictions because

* the rows come from ``Prediction`` filtered by model version and ordered by
  ``-probability``, which leads the ``prediction_rank_id`` index; PostgreSQL walks it and
  stops after one page (the material join is by primary key);
* the page never counts the matches: it asks for one row more than it shows to know
  whether a next page exists;
* only the material columns the table shows are read (never the structure JSON);
* the trust hints of every row on the page come from one ``ElementMetric`` query;
* element filters on a large PostgreSQL table become ``elements_key IN (…)`` on its
  btree index instead of ``LIKE '%-Bi-%'`` over every row (see ``ElementKeys``):
  a selective filter such as "Bi and Se" would otherwise scan 300,000 keys per
  request, or walk most of the ranking to fill one page.
"""

from __future__ import annotations

import csv
import io
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import escape  # the stdlib's: Django's lazy-aware escape() costs 3x per call

from django.db import connections
from django.db.models import F, Max, Q, QuerySet
from django.urls import reverse
from django.utils.safestring import mark_safe

from materials.models import ElementMetric, Material, ModelVersion, Prediction

PAGE_SIZE = 50

MATERIAL_COLUMNS = (
    "material__id",
    "material__formula",
    "material__reduced_formula",
    "material__elements",
    "material__space_group_number",
    "material__space_group_symbol",
    "material__crystal_system",
    "material__label",
    "material__source",
    "material__mp_id",
    "material__icsd_ids",
    "material__has_spectra",
)

# Trust levels of one element's validation recall: enough samples and a high recall
# is "good"; few samples or a poor recall is "weak"; no validation sample at all is
# "unseen" (the model never had a chance to show how it does on this element).
GOOD_RECALL, FAIR_RECALL = 0.8, 0.5
MIN_SUPPORT = 10


class ElementKeys:
    """The distinct ``elements_key`` values of the materials table, kept per process.

    A few tens of thousands of distinct element sets stand for hundreds of
    thousands of materials, so "contains Bi and Se, not O" is answered from a
    per-element index of those keys in microseconds, and the database then looks the
    keys up in its btree index on ``elements_key``. Freshness: every use reads
    ``MAX(id)`` (one index probe); new materials are added by reading the newest ids
    again (with a margin, for transactions that committed out of order); a smaller
    maximum (a reset) or the age limit rebuilds everything. A material's elements
    never change in this app (identity, formula and composition are fixed when it is
    created), except by a hand edit in the admin, which the age limit picks up.
    """

    MIN_TABLE_ID = 20_000  # below this a LIKE scan is already fast: no cache
    MAX_AGE_SECONDS = 300
    RESCAN_MARGIN = 5_000
    MAX_KEYS_IN_QUERY = 5_000  # beyond this the filter is not selective: the ranking walk is faster

    def __init__(self):
        self._lock = threading.Lock()
        self._state: dict[str, _KeyState] = {}

    def matching(self, include: list[str], exclude: list[str], using: str = "default") -> list[str] | None:
        """The element keys satisfying the filter, or None where the cache does not apply."""
        if connections[using].vendor != "postgresql" or not include:
            return None
        state = self.state(using)
        if state is None:
            return None
        keys = set.intersection(*(state.by_element.get(element, set()) for element in include))
        for element in exclude:
            keys = keys - state.by_element.get(element, set())
        return sorted(keys) if len(keys) <= self.MAX_KEYS_IN_QUERY else None

    def state(self, using: str = "default") -> _KeyState | None:
        materials = Material.objects.using(using).order_by()
        max_id = materials.aggregate(top=Max("id"))["top"] or 0
        if max_id < self.MIN_TABLE_ID:
            return None
        with self._lock:
            state = self._state.get(using)
            if state is None or max_id < state.max_id or time.monotonic() - state.built > self.MAX_AGE_SECONDS:
                state = _KeyState(max_id=max_id, built=time.monotonic())
                state.add(materials.values_list("elements_key", flat=True).distinct())
            elif max_id > state.max_id:
                newest = materials.filter(pk__gt=state.max_id - self.RESCAN_MARGIN)
                state.add(newest.values_list("elements_key", flat=True).distinct())
                state.max_id = max_id
            self._state[using] = state
            return state

    def clear(self) -> None:
        with self._lock:
            self._state.clear()


@dataclass
class _KeyState:
    max_id: int
    built: float
    by_element: dict[str, set[str]] = field(default_factory=dict)

    def add(self, keys) -> None:
        for key in keys:
            for element in key.strip("-").split("-"):
                if element:
                    self.by_element.setdefault(element, set()).add(key)


element_keys = ElementKeys()


MAX_SELECTED_IDS = 20_000  # a selection this large is not selective: walking the ranking is faster
PROBE_IDS = 4_000  # up to this many (about sqrt(51 × 300,000)), probing beats walking the ranking


def material_conditions(filters: dict, prefix: str = "material__", keys: list[str] | None = None) -> Q:
    """The filters that concern the material, as one Q over ``prefix`` fields."""
    condition = Q()
    if keys is not None:
        condition &= Q(**{f"{prefix}elements_key__in": keys})
    else:
        for element in filters.get("include") or []:
            condition &= Q(**{f"{prefix}elements_key__contains": f"-{element}-"})
        for element in filters.get("exclude") or []:
            condition &= ~Q(**{f"{prefix}elements_key__contains": f"-{element}-"})
    if filters.get("space_group"):
        condition &= Q(**{f"{prefix}space_group_number": filters["space_group"]})
    if filters.get("crystal_system"):
        condition &= Q(**{f"{prefix}crystal_system": filters["crystal_system"]})
    label = filters.get("label")  # "unlabelled", "labelled", a class, or "all"/None: no condition
    if label == "labelled":
        condition &= ~Q(**{f"{prefix}label": ""})
    elif label and label != "all":
        condition &= Q(**{f"{prefix}label": "" if label == "unlabelled" else label})
    if filters.get("source"):
        condition &= Q(**{f"{prefix}source": filters["source"]})
    return condition


def label_links(query, current: str) -> list[dict]:
    """One link per label status, keeping the page's other filters: candidates, all, labelled."""
    links = []
    for value, text in (("unlabelled", "Candidates (unlabelled)"), ("all", "All"), ("labelled", "Labelled (known)")):
        params = query.copy()
        params["label"] = value
        links.append({"value": value, "text": text, "query": params.urlencode(), "current": value == current})
    return links


def selected_material_ids(filters: dict, using: str = "default") -> list[int] | None:
    """The ids of the materials a selective element filter leaves, or None.

    With ``ElementKeys`` the element filter is an index lookup; fetching the few
    matching ids first lets the ranking query test ``material_id`` on each
    prediction without joining a material per row walked. None when the cache does
    not apply or the selection is too large to be worth it.
    """
    keys = element_keys.matching(filters.get("include") or [], filters.get("exclude") or [], using)
    if keys is None:
        return None
    table = Material._meta.db_table
    materials = (
        Material.objects.using(using)
        # One array parameter, not thousands of IN placeholders to build, send and plan.
        .extra(where=[f'"{table}"."elements_key" = ANY(%s)'], params=[keys])  # noqa: S610 - fixed SQL, bound values
        .filter(material_conditions({**filters, "include": [], "exclude": []}, prefix=""))
    )
    ids = list(materials.order_by().values_list("id", flat=True)[: MAX_SELECTED_IDS + 1])
    return ids if len(ids) <= MAX_SELECTED_IDS else None


def candidate_predictions(version: ModelVersion, filters: dict | None = None) -> QuerySet:
    """The model's predictions matching ``filters`` (a cleaned CandidateFilterForm), ranked."""
    filters = filters or {}
    predictions = Prediction.objects.filter(model_version=version)
    if filters.get("p_min") is not None:
        predictions = predictions.filter(probability__gte=filters["p_min"])
    if filters.get("p_max") is not None:
        predictions = predictions.filter(probability__lte=filters["p_max"])
    ids = selected_material_ids(filters, predictions.db) if filters.get("include") else None
    order = ("-probability", "material_id")
    if ids is not None:
        table = Prediction._meta.db_table
        predictions = predictions.extra(  # noqa: S610 - fixed SQL, bound values
            where=[f'"{table}"."material_id" = ANY(%s::bigint[])'], params=[ids]
        )
        if len(ids) <= PROBE_IDS:
            # Few materials: look each one's prediction up and sort them, rather than
            # walk the ranking past thousands of rows that are not among them. Sorting
            # on an expression keeps the planner off the ranking index.
            predictions = predictions.alias(rank_probability=F("probability") + 0.0)
            order = ("-rank_probability", "material_id")
    else:
        predictions = predictions.filter(material_conditions(filters))
    return (
        predictions.select_related("material")
        .only("id", "probability", "predicted_class", "material_id", "model_version_id", *MATERIAL_COLUMNS)
        .order_by(*order)
    )


@dataclass
class TrustHint:
    element: str
    target_class: str
    recall: float | None
    support: int

    @property
    def level(self) -> str:
        if self.support == 0 or self.recall is None:
            return "unseen"
        if self.support >= MIN_SUPPORT and self.recall >= GOOD_RECALL:
            return "good"
        if self.support >= MIN_SUPPORT // 2 and self.recall >= FAIR_RECALL:
            return "fair"
        return "weak"

    @property
    def shown(self) -> str:
        """The chip's text: recall in percent and support, e.g. "82 % · 41"."""
        return f"{self.recall:.0%} · {self.support}".replace("%", " %") if self.recall is not None else "– · 0"

    @property
    def text(self) -> str:
        """Plain-language tooltip."""
        if self.level == "unseen":
            return f"No {self.target_class} material containing {self.element} in the validation set: untested."
        return (
            f"Validation recall of {self.target_class} among materials containing {self.element}: "
            f"{self.recall:.0%} of {self.support}."
        )


@dataclass
class CandidateRow:
    rank: int
    prediction: Prediction
    trust: list[TrustHint] = field(default_factory=list)
    url: str = ""

    @property
    def material(self):
        return self.prediction.material

    @property
    def trust_html(self) -> str:
        """The trust chips as HTML (every interpolated value escaped)."""
        chips = []
        for hint in self.trust:
            text = escape(hint.text)
            chips.append(
                f'<li class="trust {hint.level}" title="{text}"><span class="el">{escape(hint.element)}</span> '
                f'{escape(hint.shown)}<span class="visually-hidden"> ({text})</span></li>'
            )
        return mark_safe("".join(chips))  # noqa: S308 - every interpolated value is escaped

    @property
    def html(self) -> str:
        """The table row, built here rather than in the template.

        Fifty rows of a dozen template variables each cost more than every query of
        the page together (Django resolves each variable through several lookups);
        formatting the row directly keeps /candidates/ fast. Every value is escaped.
        """
        material, prediction = self.prediction.material, self.prediction
        probability = f"{prediction.probability:.3f}"
        predicted = escape(prediction.predicted_class)
        mp_id = f'<div class="muted small">{escape(material.mp_id)}</div>' if material.mp_id else ""
        if material.label:
            label = f'<span class="badge {escape(material.label)}">{escape(material.label)}</span>'
        else:
            label = '<span class="muted">unlabelled</span>'
        return mark_safe(  # noqa: S308 - every interpolated value is escaped
            "<tr>"
            f'<td class="num rank" data-label="Rank">{self.rank}</td>'
            f'<td class="formula" data-label="Formula"><a href="{escape(self.url)}">'
            f"{escape(material.reduced_formula)}</a>{mp_id}</td>"
            f'<td class="num" data-label="P(topological)"><span class="prob" style="--p: {probability}">'
            f"{probability}</span></td>"
            f'<td data-label="Predicted"><span class="badge {predicted}">{predicted}</span></td>'
            f'<td data-label="Space group">{escape(material.space_group_symbol)} '
            f'<span class="muted">({material.space_group_number or "?"})</span>'
            f'<div class="muted small">{escape(material.crystal_system)}</div></td>'
            f'<td data-label="Label">{label}</td>'
            f'<td data-label="Trust"><ul class="trust-list" aria-label="Trust hints">{self.trust_html}</ul></td>'
            f'<td class="hide-narrow" data-label="Source">{escape(material.get_source_display())}</td>'
            "</tr>"
        )

    @property
    def weakest(self) -> TrustHint | None:
        order = {"unseen": 0, "weak": 1, "fair": 2, "good": 3}
        return min(self.trust, key=lambda hint: (order[hint.level], hint.recall or 0.0), default=None)


@dataclass
class CandidatePage:
    """One page of the ranking, without a total count."""

    rows: list[CandidateRow]
    number: int
    page_size: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def previous_page_number(self) -> int:
        return self.number - 1

    @property
    def next_page_number(self) -> int:
        return self.number + 1

    @property
    def start_index(self) -> int:
        return (self.number - 1) * self.page_size + 1 if self.rows else 0

    @property
    def end_index(self) -> int:
        return (self.number - 1) * self.page_size + len(self.rows)


def page_number(value) -> int:
    try:
        return max(1, min(int(value), 1_000_000))
    except (TypeError, ValueError):
        return 1


def candidate_page(version: ModelVersion, filters: dict | None, number: int, page_size: int = PAGE_SIZE):
    """Rows ``(number-1)*page_size …`` of the ranking, with trust hints: two queries."""
    offset = (number - 1) * page_size
    predictions = list(candidate_predictions(version, filters)[offset : offset + page_size + 1])
    has_next = len(predictions) > page_size
    predictions = predictions[:page_size]
    trust = element_trust_table(version, {e for p in predictions for e in p.material.elements or []})
    # One reverse() for the page, not one per row.
    url = reverse("materials:material-detail", args=[987654321])
    rows = [
        CandidateRow(
            rank=offset + index + 1,
            prediction=prediction,
            trust=trust_hints(trust, prediction),
            url=url.replace("987654321", str(prediction.material_id)),
        )
        for index, prediction in enumerate(predictions)
    ]
    return CandidatePage(rows=rows, number=number, page_size=page_size, has_next=has_next)


def element_trust_table(version: ModelVersion, elements=None) -> dict[tuple[str, str], tuple[float | None, int]]:
    """``{(element, class): (validation recall, support)}`` of one model, in one query."""
    metrics = ElementMetric.objects.filter(model_version=version, subset=ElementMetric.Subset.VALIDATION)
    if elements is not None:
        if not elements:
            return {}
        metrics = metrics.filter(element__in=sorted(elements))
    return {
        (element, target): (recall, support)
        for element, target, recall, support in metrics.values_list("element", "target_class", "recall", "support")
    }


def trust_hints(table: dict, prediction: Prediction) -> list[TrustHint]:
    """The validation recall of the predicted class for each element of the material."""
    target = prediction.predicted_class
    hints = []
    for element in prediction.material.elements or []:
        recall, support = table.get((element, target), (None, 0))
        hints.append(TrustHint(element=element, target_class=target, recall=recall, support=support))
    return hints


CSV_COLUMNS = [
    "rank",
    "material_id",
    "formula",
    "reduced_formula",
    "elements",
    "space_group_number",
    "space_group_symbol",
    "crystal_system",
    "source",
    "mp_id",
    "icsd_ids",
    "label",
    "probability_topological",
    "predicted_class",
    "trust_validation_recall",
    "model_version",
]


def candidates_csv_lines(version: ModelVersion, filters: dict | None) -> Iterator[str]:
    """The whole filtered ranking as CSV lines, streamed (two queries, any size)."""
    table = element_trust_table(version)
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield flush()
    predictions = candidate_predictions(version, filters).iterator(chunk_size=2000)
    for rank, prediction in enumerate(predictions, start=1):
        material = prediction.material
        hints = trust_hints(table, prediction)
        writer.writerow(
            [
                rank,
                material.pk,
                material.formula,
                material.reduced_formula,
                " ".join(material.elements or []),
                material.space_group_number or "",
                material.space_group_symbol,
                material.crystal_system,
                material.source,
                material.mp_id or "",
                " ".join(str(i) for i in material.icsd_ids or []),
                material.label,
                f"{prediction.probability:.6f}",
                prediction.predicted_class,
                " ".join(
                    f"{h.element}:{h.recall:.3f}/{h.support}" if h.recall is not None else f"{h.element}:-/0"
                    for h in hints
                ),
                version.pk,
            ]
        )
        if rank % 500 == 0:
            yield flush()
    yield flush()
