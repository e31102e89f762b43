"""Every operation in the OpenAPI document, fuzzed with valid and invalid input (schemathesis):
no 5xx, responses match the documented schema, and every error is a problem+json document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from tempfile import gettempdir
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tradeos.app import create_app
from tradeos.config import Settings

# Operations that set a password, which must not be one of the common ones (a rule JSON
# Schema cannot state).
CHOOSES_A_PASSWORD = {"/api/v1/auth/register", "/api/v1/users/me/password"}


@schemathesis.check
def errors_are_problem_documents(ctx: Any, response: Any, case: Any) -> None:
    if response.status_code < 400:
        return
    content_type = response.headers.get("content-type") or response.headers.get("Content-Type")
    if isinstance(content_type, list):
        content_type = content_type[0]
    assert content_type == "application/problem+json", f"{response.status_code}: {content_type}"
    body = response.json()
    assert body["status"] == response.status_code
    assert {"type", "title", "detail", "request_id"} <= set(body)


def _document_app() -> FastAPI:
    # Only its OpenAPI document is read at collection time; it never serves a request.
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        environment="test",
        data_dir=Path(gettempdir()) / "tradeos-openapi",
        jwt_secret_key="openapi-document-only-Zq7Lm2Vx9pT4",
    )
    return create_app(settings, configure_logs=False)


_document = _document_app()
schema = schemathesis.openapi.from_dict(_document.openapi())
schema.app = _document  # in-process transport; each test passes the app it really calls


@pytest.fixture
def live_app(app: FastAPI) -> Iterator[FastAPI]:
    yield app
    # schemathesis runs an app's lifespan in a thread of its own; end it to release the database.
    schemathesis_asgi.shutdown_lifespans()


@schema.parametrize()
# One app serves all the examples of an operation: the endpoints here keep no state between them.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
def test_every_operation_honours_its_contract(case: Any, live_app: FastAPI) -> None:
    excluded = []
    if case.path in CHOOSES_A_PASSWORD:
        # A schema-valid password can still be one of the common ones, refused with 422.
        excluded.append(positive_data_acceptance)
    case.call_and_validate(app=live_app, excluded_checks=excluded)
