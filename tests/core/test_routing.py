"""Query parameters that take one value refuse several."""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import FastAPI, Query

from tradeos.core.errors import install_error_handlers
from tradeos.core.routing import APIRouter


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    router = APIRouter()

    @router.get("/things")
    async def things(
        name: str | None = None, tag: Annotated[list[str] | None, Query()] = None
    ) -> dict[str, object]:
        return {"name": name, "tag": tag}

    app.include_router(router)
    return app


async def test_a_single_value_parameter_given_twice_is_422_and_lists_stay_lists() -> None:
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        twice = await client.get("/things?name=a&name=b")
        assert twice.status_code == 422
        assert twice.json()["errors"] == [
            {"field": "query.name", "message": "given more than once", "type": "value_error"}
        ]
        many = await client.get("/things?name=a&tag=x&tag=y")
        assert many.status_code == 200
        assert many.json() == {"name": "a", "tag": ["x", "y"]}
