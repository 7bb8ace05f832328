"""The /candidates/ page and its CSV: ``materials.learning.ranking`` ranks, this module shows.

The page asks for one row more than it shows to know whether a next page exists (it never
counts the matches), and reads the trust hints of every row on the page with one
``ElementMetric`` query. Rows are ``materials.learning.ranking.RankedRow``: stored (raw) probability,
calibrated probability and decision.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import escape  # the stdlib's: Django's lazy-aware escape() costs 3x per call

from django.urls import reverse
from django.utils.safestring import mark_safe

from materials.learning.element_keys import ElementKeys, element_keys  # noqa: F401 - tests and bench/bench_web.py
from materials.learning.ranking import RankedRow, RankFilter, RankQuery, selected_material_ids  # noqa: F401
from materials.models import ElementMetric, ModelVersion

PAGE_SIZE = 50

# Trust levels of one element's validation recall: enough samples and a high recall
# is "good"; few samples or a poor recall is "weak"; no validation sample at all is
# "unseen" (the model never had a chance to show how it does on this element).
GOOD_RECALL, FAIR_RECALL = 0.8, 0.5
MIN_SUPPORT = 10


def label_links(query, current: str) -> list[dict]:
    """One link per label status, keeping the page's other filters: candidates, all, labelled."""
    links = []
    for value, text in (("unlabelled", "Candidates (unlabelled)"), ("all", "All"), ("labelled", "Labelled (known)")):
        params = query.copy()
        params["label"] = value
        links.append({"value": value, "text": text, "query": params.urlencode(), "current": value == current})
    return links


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
    prediction: RankedRow
    trust: list[TrustHint] = field(default_factory=list)
    url: str = ""

    @property
    def material(self) -> RankedRow:
        return self.prediction  # the row carries its material's columns

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
        row = self.prediction
        calibrated = "–" if row.calibrated_probability is None else f"{row.calibrated_probability:.3f}"
        raw = "–" if row.probability is None else f"{row.probability:.3f}"
        decision = escape(row.decision)
        why = escape("; ".join(reason["text"] for reason in row.reasons))
        title = f' title="{why}"' if why else ""
        mp_id = f'<div class="muted small">{escape(row.mp_id)}</div>' if row.mp_id else ""
        if row.label:
            label = f'<span class="badge {escape(row.label)}">{escape(row.label)}</span>'
        else:
            label = '<span class="muted">unlabelled</span>'
        return mark_safe(  # noqa: S308 - every interpolated value is escaped
            "<tr>"
            f'<td class="num rank" data-label="Rank">{self.rank}</td>'
            f'<td class="formula" data-label="Formula"><a href="{escape(self.url)}">'
            f"{escape(row.reduced_formula)}</a>{mp_id}</td>"
            f'<td class="num" data-label="P(topological), calibrated"><span class="prob" style="--p: {calibrated}">'
            f'{calibrated}</span><div class="muted small" title="as the model gave it">raw {raw}</div></td>'
            f'<td data-label="Decision"><span class="badge {decision}"{title}>{decision}</span></td>'
            f'<td data-label="Space group">{escape(row.space_group_symbol)} '
            f'<span class="muted">({row.space_group_number or "?"})</span>'
            f'<div class="muted small">{escape(row.crystal_system)}</div></td>'
            f'<td data-label="Label">{label}</td>'
            f'<td data-label="Trust"><ul class="trust-list" aria-label="Trust hints">{self.trust_html}</ul></td>'
            f'<td class="hide-narrow" data-label="Source">{escape(row.source_display)}</td>'
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


def candidate_page(version: ModelVersion, rank_filter: RankFilter, number: int, page_size: int = PAGE_SIZE):
    """Rows ``(number-1)*page_size …`` of the ranking, decided, with trust hints: two queries
    (``version`` carries its decision rule: ``rule_annotations("rule")``)."""
    offset = (number - 1) * page_size
    ranked = RankQuery.for_model(version, rank_filter).page(None, offset, page_size + 1)
    has_next = len(ranked) > page_size
    ranked = ranked[:page_size]
    trust = element_trust_table(version, {e for row in ranked for e in row.elements})
    # One reverse() for the page, not one per row.
    url = reverse("materials:material-detail", args=[987654321])
    rows = [
        CandidateRow(
            rank=row.rank,
            prediction=row,
            trust=trust_hints(trust, row),
            url=url.replace("987654321", str(row.material_id)),
        )
        for row in ranked
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


def trust_hints(table: dict, row: RankedRow) -> list[TrustHint]:
    """The validation recall of the predicted class for each element of the material."""
    target = row.predicted_class
    hints = []
    for element in row.elements:
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
    "calibrated_probability",
    "decision",
    "reasons",
    "trust_validation_recall",
    "model_version",
]


def _number(value, digits: int = 6) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def candidates_csv_lines(version: ModelVersion, rank_filter: RankFilter) -> Iterator[str]:
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
    for row in RankQuery.for_model(version, rank_filter).iterate(chunk_size=2000):
        hints = trust_hints(table, row)
        writer.writerow(
            [
                row.rank,
                row.material_id,
                row.formula,
                row.reduced_formula,
                " ".join(row.elements),
                row.space_group_number or "",
                row.space_group_symbol,
                row.crystal_system,
                row.source,
                row.mp_id or "",
                " ".join(str(i) for i in row.icsd_ids),
                row.label,
                _number(row.probability),
                row.predicted_class,
                _number(row.calibrated_probability),
                row.decision,
                row.reason_codes,
                " ".join(
                    f"{h.element}:{h.recall:.3f}/{h.support}" if h.recall is not None else f"{h.element}:-/0"
                    for h in hints
                ),
                version.pk,
            ]
        )
        if row.rank % 500 == 0:
            yield flush()
    yield flush()
