"""POST /api/classify/: one submitted material (JSON spectra or uploaded CSV/XDI files, with a
formula, space group or structure) classified by the production model, or by a model that can
use the composition when only some elements have spectra. The view only reads the request and
serialises the answer: the checks live in :mod:`materials.learning.classify_inputs` and the answer in
:func:`materials.learning.classify.classify_submission`, which ``manage.py classify`` calls too.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from materials.api import classify_serializers as s
from materials.api.exceptions import ServiceUnavailable
from materials.api.parsers import LimitedJSONParser, LimitedMultiPartParser
from materials.api.throttles import DEFAULT_THROTTLES, ClassifyThrottle
from materials.api.views import APIMixin
from materials.learning.classify import ModelUnavailable, classify_submission, production_model
from materials.learning.classify_inputs import (
    ClassifyInputError,
    check_submission,
    read_structure_upload,
    spectra_from_files,
)


@extend_schema(
    summary="Classify one material from its spectra",
    tags=["classify"],
    request={
        "application/json": s.ClassifyRequestSerializer,
        "multipart/form-data": s.ClassifyUploadSerializer,
    },
    responses={200: s.ClassificationSerializer},
    description="Spectra as JSON, or measured spectra as CSV/XDI files (multipart). Classified by the production "
    "model; nothing is stored. Missing edges are allowed: the answer lists them in ``missing_elements``. "
    "Validation is strict: NaN or infinite values, unsorted or duplicate energies, fewer than 10 points, "
    "energies outside the element's K-edge window, unknown elements and bodies over the size limit are "
    "refused with field-level messages.",
)
class ClassifyView(APIMixin, APIView):
    parser_classes = [LimitedJSONParser, LimitedMultiPartParser]
    throttle_classes = [*DEFAULT_THROTTLES, ClassifyThrottle]
    extra_error_codes = ("503",)

    def post(self, request, *args, **kwargs):
        try:
            version = production_model()
            if request.content_type.startswith("multipart/"):
                submission = self.submission_from_upload(request)
            else:
                body = s.ClassifyRequestSerializer(data=request.data)
                body.is_valid(raise_exception=True)
                submission = body.validated_data
            return Response(classify_submission(submission, version))
        except ClassifyInputError as error:
            raise ValidationError(error.errors) from None
        except ModelUnavailable as error:
            raise ServiceUnavailable(str(error)) from None

    def submission_from_upload(self, request):
        form = s.ClassifyUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        files = [(upload.name or "upload", upload.read()) for upload in request.FILES.getlist("file")]
        spectra = spectra_from_files(files, form.validated_data.get("element") or None)
        structure_file = form.validated_data.get("structure")
        structure = None
        if structure_file is not None:
            structure = read_structure_upload(structure_file.name or "structure", structure_file.read())
        return check_submission(
            spectra,
            formula=form.validated_data.get("formula", ""),
            space_group=form.validated_data.get("space_group"),
            structure=structure,
            sort_energies=form.validated_data.get("sort_energies", False),
        )
