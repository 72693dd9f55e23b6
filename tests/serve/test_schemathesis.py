"""Property-based: schemathesis drives the app's own OpenAPI schema; no answer may be a 5xx
or break the documented responses."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from serve.app import create_app
from serve.settings import ServiceSettings
from tests.serve.conftest import API_KEY, auth

# schemathesis needs the app when the tests are collected, the tiny model only exists once
# the session fixture has trained it: the app points at a directory the fixture fills in
# before the first call starts the app's lifespan (which is when the model is read).
_WORK = Path(tempfile.mkdtemp(prefix="distillwatch-schemathesis-"))
atexit.register(shutil.rmtree, _WORK, True)
APP = create_app(
    ServiceSettings(
        model=_WORK / "model",
        db=_WORK / "state.sqlite3",
        api_keys=API_KEY,
        max_body_bytes=256 * 1024,
        host="127.0.0.1",
    ),
    load_in_background=False,
)
schema = schemathesis.openapi.from_dict(APP.openapi())
schema.app = APP  # what `from_asgi` does, without starting the app to fetch /openapi.json


@pytest.fixture(scope="module")
def model_in_place(tiny_model_dir: Path):
    from schemathesis.python import asgi

    shutil.copytree(tiny_model_dir, _WORK / "model", dirs_exist_ok=True)
    yield
    asgi.shutdown_lifespans()


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(case, model_in_place):
    excluded = []
    if case.operation.path == "/v1/score":
        # an event naming another account than the request's is valid per field but refused
        # as a whole (422 naming events.i.account_id), which a schema cannot express
        excluded.append(positive_data_acceptance)
    # a valid key in place of the generated one; but a negative case that drops the header
    # on purpose is sent without it (401): adding it back would leave only the case's other
    # "violations", some of which (an undeclared query parameter with an empty value) do not
    # survive serialization, and schemathesis would call the accepted request a failure
    headers = auth() if "Authorization" in (case.headers or {}) else None
    case.call_and_validate(headers=headers, excluded_checks=excluded)
