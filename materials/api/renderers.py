"""JSON rendering with orjson.

DRF's ``JSONRenderer`` spends about a tenth of a predictions-list request in
``json.dumps`` (50 rows of 11 fields); orjson writes the same bytes several times
faster. Anything orjson does not take as it is (a type it does not know, a
request for indented output, a NaN that strict JSON forbids) goes through DRF's
renderer, so the output and its errors stay DRF's.
"""

from __future__ import annotations

import math

import orjson
from rest_framework.renderers import JSONRenderer


class FastJSONRenderer(JSONRenderer):
    """``application/json`` through orjson, DRF's renderer as the fallback."""

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        if data is None:
            return b""
        if self.get_indent(accepted_media_type or "", renderer_context or {}) is None:
            try:
                rendered = orjson.dumps(data)
            except TypeError:  # Decimal, lazy strings, generators...: DRF's encoder knows them
                pass
            else:
                # orjson writes NaN/inf as null; DRF refuses them (strict JSON). Keep DRF's answer.
                if b"null" not in rendered or not _has_non_finite(data):
                    return rendered
        return super().render(data, accepted_media_type, renderer_context)


def _has_non_finite(value) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(item) for item in value)
    return False
