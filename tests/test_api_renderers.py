"""The orjson renderer gives DRF's answers, faster."""

import json
from decimal import Decimal

import pytest
from rest_framework.renderers import JSONRenderer

from materials.api.renderers import FastJSONRenderer


@pytest.mark.parametrize(
    "data",
    [
        {"count": 3, "results": [{"formula": "Bi2Se3", "probability": 0.93, "elements": ["Bi", "Se"]}]},
        [1, 2.5, "Ålesund", None, True],
        {"next": None, "previous": "http://x/?cursor=abc"},
    ],
)
def test_it_renders_the_same_json_as_drf(data):
    assert json.loads(FastJSONRenderer().render(data)) == json.loads(JSONRenderer().render(data))


def test_it_falls_back_to_drf_for_types_orjson_does_not_know():
    assert FastJSONRenderer().render({"price": Decimal("1.50")}) == JSONRenderer().render({"price": Decimal("1.50")})


def test_it_refuses_nan_as_drf_does():
    with pytest.raises(ValueError):
        FastJSONRenderer().render({"probability": float("nan")})


def test_it_keeps_a_null_that_is_a_null():
    assert json.loads(FastJSONRenderer().render({"mp_id": None, "p": 0.5})) == {"mp_id": None, "p": 0.5}


def test_it_indents_when_the_client_asks():
    rendered = FastJSONRenderer().render({"a": 1}, "application/json; indent=2")
    assert rendered == b'{\n  "a": 1\n}'


def test_an_empty_body_stays_empty():
    assert FastJSONRenderer().render(None) == b""
