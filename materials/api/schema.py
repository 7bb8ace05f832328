"""OpenAPI generation: the error answers every operation can give, and anonymous reads.

drf-spectacular documents the success answer of each operation; schemathesis checks
every answer against the schema, so the errors the API really gives must be there too.
``APIAutoSchema`` adds them uniformly, in the shapes ``materials.api.exceptions`` makes:

* ``{"detail": "..."}`` for 401, 403, 404, 405, 406, 413, 415, 429 and 503;
* a field → messages object for 400 (``{"spectra": {"Co": {"energies_ev": ["..."]}}}``).
"""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers
from rest_framework.permissions import SAFE_METHODS

from materials.api.permissions import ReadPublicWriteAuthenticated


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong, in words.")


VALIDATION_ERROR_SCHEMA = {
    "type": "object",
    "description": "Field-level messages: each invalid field maps to a list of messages, or to a nested object "
    "of the same shape (e.g. spectra → element → energies_ev). Errors not tied to a field are under "
    "``non_field_errors`` or ``detail``.",
    "additionalProperties": {},
}

ERROR_DESCRIPTIONS = {
    "400": "Invalid request: field-level messages.",
    "401": "Missing or invalid credentials.",
    "403": "Authenticated but not allowed (staff permission or CSRF token missing).",
    "404": "No such object, or an invalid pagination cursor or format.",
    "405": "Method not allowed.",
    "406": "The requested format cannot be produced.",
    "413": "The request body is over the size limit.",
    "415": "Unsupported content type.",
    "429": "Too many requests; retry after the number of seconds in Retry-After.",
    "503": "Service unavailable (e.g. no production model yet).",
}


class APIAutoSchema(AutoSchema):
    """AutoSchema with the API's error answers and its configurable anonymous reads."""

    #: Extra error codes per view: ``extra_error_codes = ("503",)``.
    def _error_codes(self) -> list[str]:
        codes = ["401", "403", "404", "406", "429"]
        has_body = self.method in ("POST", "PUT", "PATCH")
        has_query = bool(getattr(self.view, "filterset_class", None) or getattr(self.view, "pagination_class", None))
        if has_body or has_query or self.method == "GET":
            codes.append("400")
        if has_body:
            codes += ["413", "415"]
        codes += list(getattr(self.view, "extra_error_codes", ()))
        return codes

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for code in self._error_codes():
            if code in responses:
                continue
            if code == "400":
                body = self._get_response_for_code(VALIDATION_ERROR_SCHEMA, code, ["application/json"])
            else:
                body = self._get_response_for_code(ErrorSerializer, code, ["application/json"])
            body["description"] = ERROR_DESCRIPTIONS[code]
            responses[code] = body
        return responses

    def get_auth(self):
        auths = super().get_auth()
        anonymous_read = (
            self.method in SAFE_METHODS
            and settings.API_ANONYMOUS_READ
            and any(isinstance(p, ReadPublicWriteAuthenticated) for p in self.view.get_permissions())
        )
        if anonymous_read and {} not in auths:
            auths.append({})
        return auths
