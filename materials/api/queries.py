"""The predictions page query, written once in SQL.

``GET /api/predictions/`` is the API's hot path: clients page through 300,000
predictions of the production model, best first. Compiling the ORM query cost
1.7 ms of the 3.8 ms of server CPU per page on the project's machine (see
``bench/bench_api.py``), so the page query is built here from validated filter
values, with parameters, and on PostgreSQL executed as a prepared statement (planned
once per connection). It is the same query the ORM would write: the
``prediction_rank_id`` index on (model_version, -probability, id) gives the order, the
material columns come from a join on its primary key, and nothing counts rows.

Filters are validated by ``materials.api.filters.PredictionFilter`` before they get
here; element symbols are checked against the periodic table, so the LIKE patterns
hold letters only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from django.db import connection

from materials.models import Material, ModelVersion, Prediction

PREDICTION = Prediction._meta.db_table
MATERIAL = Material._meta.db_table
MODEL_VERSION = ModelVersion._meta.db_table

# (column, key in the row dicts the serializer reads)
COLUMNS = (
    ("p.id", "id"),
    ("p.material_id", "material_id"),
    ("p.model_version_id", "model_version_id"),
    ("p.probability", "probability"),
    ("p.predicted_class", "predicted_class"),
    ("m.reduced_formula", "material__reduced_formula"),
    ("m.formula", "material__formula"),
    ("m.mp_id", "material__mp_id"),
    ("m.space_group_number", "material__space_group_number"),
    ("m.elements_key", "material__elements_key"),
    ("m.label", "material__label"),
)
KEYS = tuple(key for _, key in COLUMNS)


@dataclass(frozen=True)
class PredictionQuery:
    """Which predictions, in which order. ``model_id`` None means the production model."""

    model_id: int | None = None
    probability_min: float | None = None
    probability_max: float | None = None
    elements: tuple[str, ...] = ()
    label: str | None = None
    predicted_class: str | None = None
    space_group: int | None = None
    probability_descending: bool = True
    id_descending: bool = False

    @classmethod
    def from_filters(cls, cleaned: dict, ordering: tuple[str, ...] = ("-probability", "id")) -> PredictionQuery:
        return cls(
            model_id=cleaned.get("model"),
            probability_min=cleaned.get("probability_min"),
            probability_max=cleaned.get("probability_max"),
            elements=tuple(cleaned.get("element") or ()),
            label=cleaned.get("label") or None,
            predicted_class=cleaned.get("predicted_class") or None,
            space_group=cleaned.get("space_group"),
        ).ordered(ordering)

    def ordered(self, ordering: tuple[str, ...]) -> PredictionQuery:
        directions = {term.lstrip("-"): term.startswith("-") for term in ordering}
        return replace(
            self,
            probability_descending=directions.get("probability", True),
            id_descending=directions.get("id", False),
        )

    def reversed(self) -> PredictionQuery:
        return replace(
            self, probability_descending=not self.probability_descending, id_descending=not self.id_descending
        )

    def where(self) -> tuple[list[str], list]:
        if self.model_id is None:
            clauses = [f"p.model_version_id = (SELECT id FROM {MODEL_VERSION} WHERE is_production LIMIT 1)"]
            params: list = []
        else:
            clauses, params = ["p.model_version_id = %s"], [self.model_id]
        if self.probability_min is not None:
            clauses.append("p.probability >= %s")
            params.append(self.probability_min)
        if self.probability_max is not None:
            clauses.append("p.probability <= %s")
            params.append(self.probability_max)
        for element in self.elements:
            clauses.append("m.elements_key LIKE %s")
            params.append(f"%-{element}-%")
        if self.label:
            clauses.append("m.label = %s")
            params.append("" if self.label == "unlabelled" else self.label)
        if self.predicted_class:
            clauses.append("p.predicted_class = %s")
            params.append(self.predicted_class)
        if self.space_group is not None:
            clauses.append("m.space_group_number = %s")
            params.append(self.space_group)
        return clauses, params

    def sql(self, after: float | None = None, limit: int | None = None, offset: int = 0) -> tuple[str, list]:
        """The SELECT; ``after`` keeps rows strictly beyond that probability in this order."""
        clauses, params = self.where()
        if after is not None:
            clauses.append("p.probability < %s" if self.probability_descending else "p.probability > %s")
            params.append(after)
        order = (
            f"p.probability {'DESC' if self.probability_descending else 'ASC'}, "
            f"p.id {'DESC' if self.id_descending else 'ASC'}"
        )
        sql = (
            f"SELECT {', '.join(column for column, _ in COLUMNS)} "
            f"FROM {PREDICTION} p JOIN {MATERIAL} m ON m.id = p.material_id "
            f"WHERE {' AND '.join(clauses)} ORDER BY {order}"
        )
        if limit is not None:
            sql += " LIMIT %s OFFSET %s"
            params += [limit, offset]
        return sql, params

    def page(self, after: float | None, offset: int, limit: int) -> list[dict]:
        """One page of rows as dicts (keys of ``KEYS``)."""
        sql, params = self.sql(after, limit, offset)
        if connection.vendor == "postgresql":
            import psycopg

            connection.ensure_connection()
            # Server-side binding, prepared after the first executions on this connection.
            with psycopg.Cursor(connection.connection) as cursor:
                cursor.execute(sql, params, prepare=True)
                rows = cursor.fetchall()
        else:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                rows = cursor.fetchall()
        return [dict(zip(KEYS, row, strict=True)) for row in rows]

    def iterate(self, chunk_size: int = 2000) -> Iterator[tuple]:
        """Every matching row as a tuple, streamed (a server-side cursor on PostgreSQL)."""
        sql, params = self.sql()
        with connection.chunked_cursor() as cursor:
            cursor.execute(sql, params)
            while rows := cursor.fetchmany(chunk_size):
                yield from rows
