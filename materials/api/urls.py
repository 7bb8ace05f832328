"""The REST API under /api/: a router of viewsets, classify, token, OpenAPI and docs."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import APIRootView, DefaultRouter

from materials.api import screenings, views
from materials.api.classify import ClassifyView
from materials.api.throttles import DEFAULT_THROTTLES


class RootView(APIRootView):
    """The API's index: links to each collection."""

    throttle_classes = DEFAULT_THROTTLES


class Router(DefaultRouter):
    APIRootView = RootView


app_name = "api"

router = Router()
# No ".json" URL suffixes (use ?format= or Accept): a dot in a path is then part of the
# id, which the view answers with a JSON 404, never Django's HTML page.
router.include_format_suffixes = False
router.register("materials", views.MaterialViewSet, basename="material")
router.register("spectra", views.SpectrumViewSet, basename="spectrum")
router.register("labels", views.TopologyLabelViewSet, basename="label")
router.register("models", views.ModelVersionViewSet, basename="modelversion")
router.register("predictions", views.PredictionViewSet, basename="prediction")
router.register("screenings", screenings.ScreeningViewSet, basename="screening")
router.register("jobs", views.JobViewSet, basename="job")

urlpatterns = [
    path("classify/", ClassifyView.as_view(), name="classify"),
    path("auth/token/", views.TokenView.as_view(), name="token"),
    path("schema/", SpectacularAPIView.as_view(throttle_classes=DEFAULT_THROTTLES), name="schema"),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(url_name="api:schema", throttle_classes=DEFAULT_THROTTLES),
        name="docs",
    ),
    path(
        "redoc/",
        SpectacularRedocView.as_view(url_name="api:schema", throttle_classes=DEFAULT_THROTTLES),
        name="redoc",
    ),
    path("", include(router.urls)),
    # Anything else under /api/ is a JSON 404, not the site's HTML page.
    re_path(r"^.*$", views.not_found, name="not-found"),
]
