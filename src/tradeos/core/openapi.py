"""The OpenAPI document says what the API really answers: every error is problem+json.

FastAPI documents its validation errors as `application/json` with its own shape; TradeOS
answers them (and every other 4xx) as RFC 9457 problem documents, so the document is corrected
once, when it is first generated.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from tradeos.core.errors import PROBLEM_CONTENT_TYPE

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "An RFC 9457 problem document.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "request_id": {"type": ["string", "null"]},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "type": {"type": ["string", "null"]},
                },
            },
        },
    },
}
_PROBLEM_RESPONSE = {
    "description": "The request was refused; the problem document says why.",
    "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
_HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def problem_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        _document_problems(document)
        app.openapi_schema = document
    return app.openapi_schema


def _document_problems(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for schemas_name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(schemas_name, None)
    for path_item in document.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _HTTP_METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for status in [code for code in responses if code.startswith("4")]:
                responses[status] = dict(_PROBLEM_RESPONSE)
            responses.setdefault("4XX", dict(_PROBLEM_RESPONSE))


def install_problem_openapi(app: FastAPI) -> None:
    app.openapi = lambda: problem_openapi(app)  # type: ignore[method-assign]
