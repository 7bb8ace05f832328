"""OpenAPI schema, offline Swagger UI, token and session authentication."""

from __future__ import annotations

import re

import pytest
import yaml
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.test import APIClient

from tests.api_support import THROTTLE_OFF


@pytest.fixture(autouse=True)
def no_throttles(settings):
    cache.clear()
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": dict(THROTTLE_OFF)}


def test_openapi_schema_documents_every_endpoint(db):
    response = APIClient().get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.") and schema["info"]["title"] == "XAS topology screening API"
    paths = schema["paths"]
    for path in (
        "/api/materials/",
        "/api/materials/{id}/",
        "/api/spectra/",
        "/api/labels/",
        "/api/models/",
        "/api/models/{id}/",
        "/api/models/{id}/retrain/",
        "/api/models/{id}/promote/",
        "/api/predictions/",
        "/api/predictions/export/",
        "/api/classify/",
        "/api/screenings/",
        "/api/screenings/{id}/",
        "/api/screenings/{id}/candidates/",
        "/api/jobs/{id}/",
        "/api/auth/token/",
    ):
        assert path in paths, path
    classify = paths["/api/classify/"]["post"]
    assert set(classify["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert {"200", "400", "401", "413", "429", "503"} <= set(classify["responses"])
    predictions = paths["/api/predictions/"]["get"]
    names = {p["name"] for p in predictions["parameters"]}
    assert {"model", "probability_min", "probability_max", "element", "label", "ordering", "cursor"} <= names
    # Anonymous reads are allowed: the read operations accept no credentials.
    assert {} in predictions["security"]
    assert {} not in classify["security"]
    assert set(schema["components"]["securitySchemes"]) >= {"tokenAuth", "cookieAuth"}


def test_schema_as_json(db):
    response = APIClient().get("/api/schema/?format=json")
    assert response.status_code == 200 and response.json()["paths"]


def test_swagger_ui_is_served_offline(db, client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/api/schema/" in html
    assert not re.search(r"https?://(cdn|unpkg|fonts)\.", html)  # nothing from a CDN
    assets = re.findall(r'src="([^"]+\.js)"', html)
    assert assets and all(src.startswith("/static/drf_spectacular_sidecar/") for src in assets)
    for src in assets:
        asset = client.get(src)
        assert asset.status_code == 200, src
        b"".join(asset.streaming_content) if asset.streaming else asset.content


def test_token_for_username_and_password(db):
    get_user_model().objects.create_user("dana", password="correct horse battery")
    response = APIClient().post(
        "/api/auth/token/", {"username": "dana", "password": "correct horse battery"}, format="json"
    )
    assert response.status_code == 200
    token = response.json()["token"]
    wrong = APIClient().post("/api/auth/token/", {"username": "dana", "password": "nope"}, format="json")
    assert wrong.status_code == 400
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/materials/").status_code == 200


def test_token_endpoint_is_throttled(db, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**THROTTLE_OFF, "login": "2/minute"},
    }
    codes = [
        APIClient().post("/api/auth/token/", {"username": "x", "password": "y"}, format="json").status_code
        for _ in range(3)
    ]
    assert codes == [400, 400, 429]


def test_session_login_for_the_browsable_api(db):
    user = get_user_model().objects.create_user("erin")
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    page = client.get("/api/predictions/", HTTP_ACCEPT="text/html")
    assert page.status_code == 200 and b"<html" in page.content.lower()
    # A session-authenticated write needs the CSRF token.
    response = client.post("/api/classify/", {"spectra": {}}, format="json")
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]


def test_api_root_lists_the_endpoints(db):
    body = APIClient().get("/api/").json()
    assert {"materials", "spectra", "labels", "models", "predictions", "screenings"} <= set(body)
