"""Request parsers with a size limit. (Uploaded spectrum files are read by
:mod:`materials.ingest.spectrum_files`.)

Size limits. DRF streams a JSON body straight into the parser, so Django's
``DATA_UPLOAD_MAX_MEMORY_SIZE`` never applies to it, and Django's multipart parser
applies that limit to form fields but not to files. Every parser here refuses a body
over the view's ``max_body_bytes`` (``DATA_UPLOAD_MAX_MEMORY_SIZE`` by default) with
a 413 before reading it.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework.parsers import JSONParser, MultiPartParser

from materials.api.exceptions import PayloadTooLarge


def body_limit(parser_context) -> int:
    view = (parser_context or {}).get("view")
    limit = getattr(view, "max_body_bytes", None)
    return int(limit() if callable(limit) else limit or settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


def check_body_size(parser_context) -> None:
    request = (parser_context or {}).get("request")
    if request is None:
        return
    meta = request.META
    try:
        length = int(meta.get("CONTENT_LENGTH") or 0)
    except (TypeError, ValueError):
        length = 0
    limit = body_limit(parser_context)
    if length > limit:
        raise PayloadTooLarge(f"The request body is {length} bytes; the limit is {limit} bytes.")


class LimitedJSONParser(JSONParser):
    """JSON with a size limit. NaN and Infinity literals are read (not a parse error) so
    that validation can answer with the field that holds them."""

    strict = False

    def parse(self, stream, media_type=None, parser_context=None):
        check_body_size(parser_context)
        return super().parse(stream, media_type, parser_context)


class LimitedMultiPartParser(MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        check_body_size(parser_context)
        return super().parse(stream, media_type, parser_context)
