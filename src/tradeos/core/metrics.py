"""Prometheus metrics at /metrics: request counts and latency by route template, method, status."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_fastapi_instrumentator import Instrumentator, metrics
from prometheus_fastapi_instrumentator.middleware import PrometheusInstrumentatorMiddleware
from starlette.requests import Request

from tradeos.core.routing import route_template

# Latency buckets in seconds, from a cache hit to a slow report.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def install_metrics(app: FastAPI) -> None:
    # A registry per application keeps apps (and tests) independent. With several worker
    # processes PROMETHEUS_MULTIPROC_DIR is set (by `tradeos serve --workers N`) and the
    # instrumentator aggregates every process's files at /metrics.
    registry = CollectorRegistry()
    app.state.metrics_registry = registry  # other parts add their own metrics to it
    instrumentator = Instrumentator(
        should_group_status_codes=False,
        should_group_untemplated=True,  # unknown paths count as one "none" handler, not one each
        should_instrument_requests_inprogress=False,
        excluded_handlers=["/metrics"],
        registry=registry,
    )
    instrumentator.add(
        metrics.requests(registry=registry),
        metrics.latency(registry=registry, buckets=LATENCY_BUCKETS),
    )
    instrumentator.instrument(app).expose(app, include_in_schema=False, should_gzip=False)
    for middleware in app.user_middleware:
        entry: Any = middleware  # Starlette types `cls` as a factory; it is the class here
        if entry.cls is PrometheusInstrumentatorMiddleware:
            entry.cls = _MetricsMiddleware


class _MetricsMiddleware(PrometheusInstrumentatorMiddleware):
    """The instrumentator's middleware, naming a request's route as the access log does: one
    lookup of the route template per path, shared by both, instead of one walk of every route
    for each of them on every request."""

    def _get_handler(self, request: Request) -> tuple[str, bool]:
        template = route_template(request.scope)
        return (template, True) if template else (request.url.path, False)
