"""Pagination. Large sets (materials, spectra, labels, predictions) use cursors: no
``COUNT(*)``, and each page is one indexed range scan however deep the client goes."""

from __future__ import annotations

import math

from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination, PageNumberPagination


class StrictPageSizeMixin:
    """``page_size`` must be a whole number from 1 to ``max_page_size``: anything else is a
    400 (DRF would silently fall back to the default)."""

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            size = int(raw)
        except (TypeError, ValueError):
            size = 0
        if not 1 <= size <= self.max_page_size:
            raise ValidationError({self.page_size_query_param: [f"a whole number from 1 to {self.max_page_size}"]})
        return size

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": self.max_page_size}
        return parameters


class StableCursorPagination(StrictPageSizeMixin, CursorPagination):
    """Cursor pagination that checks the cursor's position before it reaches SQL.

    DRF decodes the cursor but passes its position straight into the query, so a
    forged cursor (``p=abc``) would make a 500; here it is a 404 "Invalid cursor".
    ``position_type`` is the type of the first ordering field.
    """

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    ordering = ("id",)
    position_type = int

    def decode_cursor(self, request):
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            try:
                value = self.position_type(cursor.position)
            except (TypeError, ValueError, OverflowError):
                raise NotFound(self.invalid_cursor_message) from None
            if isinstance(value, float) and not math.isfinite(value):
                raise NotFound(self.invalid_cursor_message)
            if isinstance(value, int) and abs(value) > 2**62:
                raise NotFound(self.invalid_cursor_message)
        return cursor


class IdCursorPagination(StableCursorPagination):
    ordering = ("id",)


class PredictionCursorPagination(StableCursorPagination):
    """Predictions, best first: ``(-probability, id)``; served by the
    ``prediction_rank_id`` index on (model_version, -probability, id)."""

    ordering = ("-probability", "id")
    position_type = float


class SmallPagePagination(StrictPageSizeMixin, PageNumberPagination):
    """Small sets (model versions, screenings): numbered pages with a count."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_number(self, request, paginator):
        raw = request.query_params.get(self.page_query_param)
        if raw is not None and not raw.strip().isdigit():
            raise NotFound("Invalid page: a page number is a whole number from 1.")
        return super().get_page_number(request, paginator)


class PredictionQueryPagination(PredictionCursorPagination):
    """DRF's cursor pagination, run on a ``materials.learning.ranking.RankQuery`` instead of a
    queryset (same cursors, same position/offset rules, same links)."""

    def paginate_query(self, query, request, view=None):
        self.request = request
        self.page_size = self.get_page_size(request)
        self.base_url = request.build_absolute_uri()
        self.ordering = self.get_ordering(request, None, view)
        query = query.ordered(self.ordering)
        self.cursor = self.decode_cursor(request)
        offset, reverse, current_position = self.cursor if self.cursor is not None else (0, False, None)
        if reverse:
            query = query.reversed()
        after = float(current_position) if current_position is not None else None
        results = query.page(after, offset, self.page_size + 1)
        self.page = list(results[: self.page_size])
        has_following_position = len(results) > len(self.page)
        following_position = (
            self._get_position_from_instance(results[-1], self.ordering) if has_following_position else None
        )
        if reverse:
            self.page = list(reversed(self.page))
            self.has_next = (current_position is not None) or (offset > 0)
            self.has_previous = has_following_position
            if self.has_next:
                self.next_position = current_position
            if self.has_previous:
                self.previous_position = following_position
        else:
            self.has_next = has_following_position
            self.has_previous = (current_position is not None) or (offset > 0)
            if self.has_next:
                self.next_position = following_position
            if self.has_previous:
                self.previous_position = current_position
        if (self.has_previous or self.has_next) and self.template is not None:
            self.display_page_controls = True
        return self.page
