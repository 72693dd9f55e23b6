"""Property-based: schemathesis drives the app's own OpenAPI schema; no answer may be a 5xx
or break the documented responses."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.serve.conftest import API_KEY, auth


@pytest.fixture(scope="module")
def api_schema(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from schemathesis.python import asgi

    from serve.app import create_app
    from serve.settings import ServiceSettings

    db = tmp_path_factory.mktemp("schemathesis") / "state.sqlite3"
    app = create_app(
        ServiceSettings(model=tiny_model_dir, db=db, api_keys=API_KEY, max_body_bytes=256 * 1024)
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the lifespan
    assert app.state.service.wait_loaded(120)
    yield schema
    asgi.shutdown_lifespans()


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(case):
    case.call_and_validate(headers=auth())
