"""Streamed exports (CSV and JSON) of predictions and screening candidates.

Rows come from ``values_list(...).iterator(chunk_size=...)`` (a server-side cursor
on PostgreSQL) and leave as they are read, so memory stays constant however many
rows there are. The JSON form is one array, written element by element.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator, Sequence

from django.http import StreamingHttpResponse
from rest_framework.renderers import BaseRenderer, JSONRenderer

CHUNK_SIZE = 2000


class CSVRenderer(BaseRenderer):
    """Selects ``?format=csv`` / ``Accept: text/csv``; exports stream their own body."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):  # pragma: no cover - never used
        return JSONRenderer().render(data, "application/json", renderer_context)


class StreamingJSONRenderer(JSONRenderer):
    """``?format=json``; the export views stream the body themselves."""


EXPORT_RENDERERS = [StreamingJSONRenderer, CSVRenderer]


class _Echo:
    def write(self, value):
        return value


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def csv_lines(columns: Sequence[str], rows: Iterable[Sequence]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(columns)
    buffer: list[str] = []
    for row in rows:
        buffer.append(writer.writerow(["" if v is None else v for v in map(_clean, row)]))
        if len(buffer) >= 500:
            yield "".join(buffer)
            buffer.clear()
    if buffer:
        yield "".join(buffer)


def json_lines(columns: Sequence[str], rows: Iterable[Sequence]) -> Iterator[str]:
    encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
    yield "["
    first = True
    buffer: list[str] = []
    for row in rows:
        item = encode(dict(zip(columns, map(_clean, row), strict=True)))
        buffer.append(item if first else "," + item)
        first = False
        if len(buffer) >= 500:
            yield "\n".join(buffer) + "\n"
            buffer.clear()
    if buffer:
        yield "\n".join(buffer)
    yield "]\n"


def streaming_export(fmt: str, columns: Sequence[str], rows: Iterable[Sequence], filename: str):
    """A StreamingHttpResponse of ``rows`` (tuples in ``columns`` order) as CSV or JSON."""
    if fmt == "csv":
        response = StreamingHttpResponse(csv_lines(columns, rows), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{filename}.csv"'
    else:
        response = StreamingHttpResponse(json_lines(columns, rows), content_type="application/json")
        response["Content-Disposition"] = f'inline; filename="{filename}.json"'
    return response
