"""Ranking stored probabilities: one filter (``RankFilter``), one query (``RankQuery``), one row
(``RankedRow``, decided). It serves /candidates/ and its CSV, ``/api/predictions/`` and its export,
and a screening's rows (page, CSV, ``/api/screenings/{id}/rows/`` and ``candidates/``).

Entry points parse their input into a ``RankFilter`` and format the rows; nothing else builds a
ranking. Rows are a model's predictions, or a screening's rows (ranked by the probability on the
row: the spectral model's, else the prior's; rows without one are not ranked yet: left out).

Fast at 300,000 predictions because

* the query is SQL written here from validated values, with parameters; on PostgreSQL a page is
  a prepared statement (compiling the ORM query cost about half of an API page's server CPU,
  ``bench/bench_api.py``);
* it filters by model (or screening) and orders by ``-probability, id``, which is the
  ``prediction_rank_id`` (``screening_row_rank``) index: PostgreSQL walks it and stops after one
  page; the material join is by primary key; nothing counts rows;
* element filters on a large PostgreSQL table go through ``ElementKeys`` (``elements_key`` looked
  up in its btree index) instead of ``LIKE '%-Bi-%'`` over every row, and few matching materials
  are probed one by one instead of walking the ranking past thousands of others;
* each row's calibrated probability and decision come from its model's rule, read in the query
  that reads the model, applied to a page (or a chunk) at once (``decisions.decide_rows``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

from django.db import connections

from materials.learning.decisions import (
    annotated_rule,
    decide_rows,
    raw_bounds,
    rule_annotations,
    rule_from_metrics,
    rule_from_parts,
)
from materials.learning.element_keys import element_keys
from materials.models import Material, ModelVersion, Prediction, ScreeningRow
from mlcore.decision import DECISIONS, DecisionRule

#: Which materials: those no catalogue labels (the candidates, the default), every one, the
#: labelled ones, or those of one class.
LABEL_SCOPES = ("unlabelled", "all", "labelled", "topological", "trivial")
LABEL_OUT = {"topological": "topological", "trivial": "trivial", "": "unlabelled"}


@dataclass(frozen=True)
class RankFilter:
    """Which stored probabilities to rank, and in which order. Every value is validated by the
    entry point that built it (element symbols against the periodic table)."""

    label: str = "unlabelled"
    include: tuple[str, ...] = ()  # elements the material must contain
    exclude: tuple[str, ...] = ()  # ... and must not
    space_group: int | None = None
    crystal_system: str = ""
    source: str = ""
    probability_min: float | None = None  # the raw (stored) P(topological)
    probability_max: float | None = None
    decision: str = ""  # topological, trivial or abstain, by the calibrated probability
    predicted_class: str = ""  # predictions only
    stage: str = ""  # screening rows only
    descending: bool = True
    id_descending: bool = False

    def __post_init__(self):
        if self.label not in LABEL_SCOPES:
            raise ValueError(f"unknown label scope {self.label!r}; expected one of {LABEL_SCOPES}")
        if self.decision and self.decision not in DECISIONS:
            raise ValueError(f"unknown decision {self.decision!r}; expected one of {DECISIONS}")

    @classmethod
    def from_values(cls, values: dict, default_label: str = "unlabelled") -> RankFilter:
        """A filter from an entry point's cleaned values, named as the fields (others ignored;
        None or empty: no condition)."""
        given = {k: v for k, v in values.items() if k in cls.__dataclass_fields__ and v not in (None, "", [], ())}
        given.update({name: tuple(given[name]) for name in ("include", "exclude") if name in given})
        return cls(**{"label": default_label, **given})

    def ordered(self, ordering: tuple[str, ...]) -> RankFilter:
        """Directions from DRF-style terms (``-probability``, ``id``)."""
        directions = {term.lstrip("-"): term.startswith("-") for term in ordering}
        return replace(self, descending=directions.get("probability", True), id_descending=directions.get("id", False))

    def reversed(self) -> RankFilter:
        return replace(self, descending=not self.descending, id_descending=not self.id_descending)


MAX_SELECTED_IDS = 20_000  # a selection this large is not selective: walking the ranking is faster
PROBE_IDS = 4_000  # up to this many (about sqrt(51 × 300,000)), probing beats walking the ranking
MATERIAL = Material._meta.db_table
#: A model version's decision rule, read without its metrics JSON (``->`` on PostgreSQL and SQLite).
RULE_SQL = (
    "SELECT id, threshold, metrics -> 'calibration' -> 'calibrator', metrics -> 'calibration' -> 'band' "
    f"FROM {ModelVersion._meta.db_table}"
)


def material_clauses(rank_filter: RankFilter, keys: list[str] | None = None) -> tuple[list[str], list]:
    """SQL conditions on the material ``m`` (``keys``: its element keys, already selected)."""
    clauses, params = [], []
    if keys is not None:
        clauses.append("m.elements_key = ANY(%s)")
        params.append(keys)
    else:
        for element in rank_filter.include:
            clauses.append("m.elements_key LIKE %s")
            params.append(f"%-{element}-%")
        for element in rank_filter.exclude:
            clauses.append("m.elements_key NOT LIKE %s")
            params.append(f"%-{element}-%")
    label = rank_filter.label
    if label == "labelled":
        clauses.append("m.label <> ''")
    elif label != "all":
        clauses.append("m.label = %s")
        params.append("" if label == "unlabelled" else label)
    for column, value in (
        ("space_group_number", rank_filter.space_group),
        ("crystal_system", rank_filter.crystal_system),
        ("source", rank_filter.source),
    ):
        if value not in (None, ""):
            clauses.append(f"m.{column} = %s")
            params.append(value)
    return clauses, params


def selected_material_ids(rank_filter: RankFilter, using: str = "default") -> list[int] | None:
    """The ids of the materials a selective element filter leaves, or None.

    With ``ElementKeys`` the element filter is an index lookup; fetching the few matching ids
    first lets the ranking test ``material_id`` on each row without joining a material per row
    walked. None when the cache does not apply or the selection is too large to be worth it.
    """
    keys = element_keys.matching(rank_filter.include, rank_filter.exclude, using)
    if keys is None:
        return None
    clauses, params = material_clauses(rank_filter, keys)
    sql = f"SELECT m.id FROM {MATERIAL} m WHERE {' AND '.join(clauses)} LIMIT %s"
    with connections[using].cursor() as cursor:
        cursor.execute(sql, [*params, MAX_SELECTED_IDS + 1])
        ids = [row[0] for row in cursor.fetchall()]
    return ids if len(ids) <= MAX_SELECTED_IDS else None


# --- Rows ------------------------------------------------------------------------------------------


#: One row's columns, the same for predictions and screening rows (the other kind's as constants).
COLUMNS = (
    "p.id",
    "p.material_id",
    "p.probability",
    "m.formula",
    "m.reduced_formula",
    "m.elements_key",
    "m.space_group_number",
    "m.space_group_symbol",
    "m.crystal_system",
    "m.label",
    "m.source",
    "m.mp_id",
    "m.icsd_ids",
    "m.amcsd_id",
    "p.predicted_class",
    "p.files",
    "p.stage",
    "p.prior_probability",
    "p.spectral_probability",
    "p.reason",
)
ONLY_PREDICTIONS = {"p.predicted_class": "''"}
ONLY_SCREENINGS = {"p.files": "NULL", "p.stage": "''", "p.prior_probability": "NULL"}
ONLY_SCREENINGS |= {"p.spectral_probability": "NULL", "p.reason": "''"}


def _column(index: int):
    return property(lambda row: row.values[index])


class RankedRow:
    """One ranked material: its stored (raw) probability, the calibrated one and the decision.

    It keeps the database's tuple (``COLUMNS`` order) and reads fields from it: a page of the
    API's hottest list is built without copying each value (``bench/bench_api.py``).
    """

    __slots__ = ("values", "probability", "rank", "model_version", "calibrated_probability", "decision", "reasons")

    def __init__(self, values: tuple, rank: int = 0, model_version: int | None = None):
        self.values = values
        probability = values[2]
        self.probability = probability if probability is None or math.isfinite(probability) else None
        self.rank = rank
        self.model_version = model_version
        self.calibrated_probability, self.decision, self.reasons = None, "abstain", []

    id = _column(0)
    material_id = _column(1)
    formula = _column(3)
    reduced_formula = _column(4)
    space_group_number = _column(6)
    space_group_symbol = _column(7)
    crystal_system = _column(8)
    label = _column(9)
    source = _column(10)
    mp_id = _column(11)
    amcsd_id = _column(13)
    predicted_class = _column(14)
    stage = _column(16)
    prior_probability = _column(17)
    spectral_probability = _column(18)
    reason = _column(19)

    @property
    def elements(self) -> list[str]:
        key = self.values[5]
        return key.strip("-").split("-") if key else []

    @property
    def icsd_ids(self) -> list:
        return _json_list(self.values[12])

    @property
    def files(self) -> list:
        return _json_list(self.values[15])

    @property
    def label_out(self) -> str:
        return LABEL_OUT.get(self.label, "unlabelled")

    @property
    def source_display(self) -> str:
        return dict(Material.Source.choices).get(self.source, self.source)

    @property
    def stage_display(self) -> str:
        return dict(ScreeningRow.Stage.choices).get(self.stage, self.stage)

    @property
    def reason_codes(self) -> str:
        return " ".join(reason["code"] for reason in self.reasons)


def _json_list(value) -> list:
    return [] if value is None else value if isinstance(value, list) else json.loads(value)


# --- The query -------------------------------------------------------------------------------------


class RankQuery:
    """The ranking of one model's predictions (``for_model``) or one screening's rows
    (``for_screening``) matching a ``RankFilter``; ``page`` for a page, ``iterate`` for all."""

    def __init__(
        self, rank_filter: RankFilter, *, table: str, scope: tuple[str, int | None], rules: dict, using="default"
    ):
        self.filter = rank_filter
        self.table = table
        self.scope = scope
        self.rules = rules  # {"model": rule} or {"spectral": rule, "prior": rule}
        self.using = using
        self.screening = table == ScreeningRow._meta.db_table

    @classmethod
    def for_model(cls, version, rank_filter: RankFilter, using: str = "default") -> RankQuery:
        """Predictions of ``version`` (None: nothing to rank); its rule from
        ``rule_annotations("rule")`` where the caller read them, else from its metrics."""
        if version is None or hasattr(version, "rule_threshold"):
            rule = annotated_rule(version, "rule")
        else:
            rule = rule_from_metrics(version)
        scope = ("model_version_id", version.pk if version is not None else None)
        return cls(rank_filter, table=Prediction._meta.db_table, scope=scope, rules={"model": rule}, using=using)

    @classmethod
    def for_model_id(cls, model_id: int | None, rank_filter: RankFilter, using: str = "default") -> RankQuery:
        """Predictions of model ``model_id`` (None: the production model; nothing when there is no
        such model). Its rule is read in one small raw query: the calibration keys, never the
        metrics JSON (the ORM's annotations cost the API's hot list a third of its CPU)."""
        where, params = ("is_production", []) if model_id is None else ("id = %s", [model_id])
        with connections[using].cursor() as cursor:
            cursor.execute(f"{RULE_SQL} WHERE {where} LIMIT 1", params)
            found = cursor.fetchone()
        rule = rule_from_parts(*found[1:]) if found else rule_from_parts(None, None, None)
        scope = ("model_version_id", found[0] if found else None)
        return cls(rank_filter, table=Prediction._meta.db_table, scope=scope, rules={"model": rule}, using=using)

    @classmethod
    def for_screening(cls, batch, rank_filter: RankFilter, using: str = "default") -> RankQuery:
        """Rows of ``batch``, ranked by the probability on each, decided by the model that gave
        it (``screening_rule_annotations()`` read with the batch, or read again here)."""
        if not hasattr(batch, "spectral_rule_threshold"):
            batch = type(batch).objects.using(using).annotate(**screening_rule_annotations()).get(pk=batch.pk)
        rules = {"spectral": annotated_rule(batch, "spectral_rule"), "prior": annotated_rule(batch, "prior_rule")}
        scope = ("batch_id", batch.pk)
        return cls(rank_filter, table=ScreeningRow._meta.db_table, scope=scope, rules=rules, using=using)

    def ordered(self, ordering: tuple[str, ...]) -> RankQuery:
        return self._with(self.filter.ordered(ordering))

    def reversed(self) -> RankQuery:
        return self._with(self.filter.reversed())

    def _with(self, rank_filter: RankFilter) -> RankQuery:
        return RankQuery(rank_filter, table=self.table, scope=self.scope, rules=self.rules, using=self.using)

    # --- SQL ---

    @property
    def columns(self) -> tuple[str, ...]:
        constants = ONLY_PREDICTIONS if self.screening else ONLY_SCREENINGS
        return tuple(constants.get(column, column) for column in COLUMNS)

    def _decision_clause(self, column: str, rule: DecisionRule) -> tuple[str, list]:
        bounds = raw_bounds(rule, self.filter.decision)
        if bounds is None:
            return "1 = 0", []
        low, high = bounds
        if self.filter.decision == "topological":
            return (f"{column} >= %s", [low]) if math.isfinite(low) else ("1 = 0", [])
        if self.filter.decision == "trivial":
            return (f"{column} <= %s", [high]) if math.isfinite(high) else ("1 = 0", [])
        clauses, params = [f"{column} IS NOT NULL"], []
        if math.isfinite(low):
            clauses.append(f"{column} > %s")
            params.append(low)
        if math.isfinite(high):
            clauses.append(f"{column} < %s")
            params.append(high)
        return " AND ".join(clauses), params

    def where(self) -> tuple[list[str], list, list[int] | None]:
        """The conditions, their parameters, and the preselected material ids (if any)."""
        f = self.filter
        column, value = self.scope
        clauses, params = [f"p.{column} = %s"], [value]
        if self.screening:
            clauses.append("p.probability IS NOT NULL")  # not ranked (yet): left out
            if f.stage:
                clauses.append("p.stage = %s")
                params.append(f.stage)
        elif f.predicted_class:
            clauses.append("p.predicted_class = %s")
            params.append(f.predicted_class)
        if f.probability_min is not None:
            clauses.append("p.probability >= %s")
            params.append(f.probability_min)
        if f.probability_max is not None:
            clauses.append("p.probability <= %s")
            params.append(f.probability_max)
        if f.decision:
            if self.screening:
                spectral, spectral_params = self._decision_clause("p.probability", self.rules["spectral"])
                prior, prior_params = self._decision_clause("p.probability", self.rules["prior"])
                clauses.append(
                    f"((p.spectral_probability IS NOT NULL AND {spectral}) "
                    f"OR (p.spectral_probability IS NULL AND {prior}))"
                )
                params += spectral_params + prior_params
            else:
                clause, clause_params = self._decision_clause("p.probability", self.rules["model"])
                clauses.append(clause)
                params += clause_params
        ids = selected_material_ids(f, self.using) if f.include and value is not None else None
        if ids is not None:
            clauses.append("p.material_id = ANY(%s::bigint[])")
            params.append(ids)
        else:
            material, material_params = material_clauses(f)
            clauses += material
            params += material_params
        return clauses, params, ids

    def sql(self, after: float | None = None, limit: int | None = None, offset: int = 0) -> tuple[str, list]:
        """The SELECT; ``after`` keeps rows strictly beyond that probability in this order."""
        f = self.filter
        clauses, params, ids = self.where()
        if after is not None:
            clauses.append("p.probability < %s" if f.descending else "p.probability > %s")
            params.append(after)
        rank = "p.probability"
        if ids is not None and len(ids) <= PROBE_IDS:
            # Few materials: look each one's row up and sort them, rather than walk the ranking
            # past thousands of rows that are not among them. Sorting on an expression keeps the
            # planner off the ranking index.
            rank = "(p.probability + 0.0)"
        order = f"{rank} {'DESC' if f.descending else 'ASC'}, p.id {'DESC' if f.id_descending else 'ASC'}"
        sql = (
            f"SELECT {', '.join(self.columns)} FROM {self.table} p JOIN {MATERIAL} m ON m.id = p.material_id "
            f"WHERE {' AND '.join(clauses)} ORDER BY {order}"
        )
        if limit is not None:
            sql += " LIMIT %s OFFSET %s"
            params += [limit, offset]
        return sql, params

    # --- Rows ---

    def page(self, after: float | None, offset: int, limit: int) -> list[RankedRow]:
        """One page of decided rows (``rank`` counts from ``offset`` + 1)."""
        if self.scope[1] is None:
            return []
        sql, params = self.sql(after, limit, offset)
        connection = connections[self.using]
        if connection.vendor == "postgresql":
            import psycopg

            connection.ensure_connection()
            # Server-side binding, prepared after the first executions on this connection.
            with psycopg.Cursor(connection.connection) as cursor:
                cursor.execute(sql, params, prepare=True)
                raw = cursor.fetchall()
        else:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                raw = cursor.fetchall()
        return self.rows(raw, first_rank=offset + 1)

    def iterate(self, chunk_size: int = 2000) -> Iterator[RankedRow]:
        """Every matching row, decided, ranked from 1, streamed (a server-side cursor on
        PostgreSQL; decided one chunk at a time)."""
        if self.scope[1] is None:
            return
        sql, params = self.sql()
        rank = 1
        with connections[self.using].chunked_cursor() as cursor:
            cursor.execute(sql, params)
            while raw := cursor.fetchmany(chunk_size):
                yield from self.rows(raw, first_rank=rank)
                rank += len(raw)

    def rows(self, raw: list[tuple], first_rank: int = 1) -> list[RankedRow]:
        """Database tuples (``COLUMNS`` order) as decided ``RankedRow``\\ s."""
        model = None if self.screening else self.scope[1]
        rows = [RankedRow(values, first_rank + index, model) for index, values in enumerate(raw)]
        if self.screening:
            decide_rows([r for r in rows if r.spectral_probability is not None], self.rules["spectral"])
            decide_rows([r for r in rows if r.spectral_probability is None], self.rules["prior"])
        else:
            decide_rows(rows, self.rules["model"])
        return rows


def screening_rule_annotations() -> dict:
    """``ScreeningBatch`` annotations carrying its two models' rules (stage 2's and the prior's)."""
    return {**rule_annotations("spectral_rule", "model_version"), **rule_annotations("prior_rule", "prior_version")}
