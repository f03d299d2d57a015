"""The OpenAPI document tells the truth about errors, and undeclared methods get 405 + Allow.

FastAPI declares a 422 "validation error" on every route with parameters, but ccd answers a
bad parameter with 400 (422 is an invalid workflow file, with its problems) and never
declares the statuses its guards give. Here each operation gets what it can really answer:
its own statuses (``errors(...)`` in the route's decorator), 400 when it takes input, 413
when it takes a body, and 401/403 (the TCP token, the socket's peer check, cross-site
requests) everywhere.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.routing import Match

WHY = {
    400: "A parameter or body that does not validate",
    401: "Over TCP: no valid token (`Authorization: Bearer`) or session cookie",
    403: "Refused: not the socket's user, a cross-site browser request, or a route that "
    "answers on the Unix socket only",
    404: "No such workflow, job or attempt",
    409: "Not in the workflow's present state",
    413: "Request body over the daemon's max_request_bytes",
    422: "The workflow file is invalid: every problem, with file and line",
}
_BODY_METHODS = ("post", "put", "patch", "delete")


class ErrorBody(BaseModel):
    error: str


class SpecErrorBody(ErrorBody):
    problems: list[str]


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that can answer these statuses itself."""
    return {
        status: {"model": SpecErrorBody if status == 422 else ErrorBody, "description": WHY[status]}
        for status in statuses
    }


def document_errors(app: FastAPI) -> None:
    """Build the app's OpenAPI document once, with every error response declared."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for operations in schema["paths"].values():
                for method, operation in operations.items():
                    _declare(method, operation)
            _link_workflow_ids(schema["paths"])
            schema["components"]["schemas"].pop("HTTPValidationError", None)
            schema["components"]["schemas"].pop("ValidationError", None)
            schema["components"]["securitySchemes"] = {
                "token": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Over TCP only: the daemon's token, from "
                    "<state_dir>/http-token (a browser uses the cookie that `ccctl web`'s "
                    "login link sets). The Unix socket needs none.",
                }
            }
            schema["security"] = [{"token": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _declare(method: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation["responses"]
    declared_422 = responses.get("422", {})
    if "HTTPValidationError" in str(declared_422):  # FastAPI's own, never given
        del responses["422"]
    takes_query = any(p["in"] == "query" for p in operation.get("parameters", []))
    statuses = [401, 403]
    if takes_query or "requestBody" in operation:
        statuses.append(400)
    if method in _BODY_METHODS:
        statuses.append(413)
    for status in statuses:
        responses.setdefault(str(status), _error_response(status))
    operation["responses"] = dict(sorted(responses.items()))


def _link_workflow_ids(paths: dict[str, Any]) -> None:
    """OpenAPI links: the id a submit returns is the ``workflow_id`` of every other workflow
    route, and a status names its jobs (how /docs and a stateful fuzzer walk the API)."""
    created = paths["/workflows"]["post"]["responses"]["201"]
    status = paths["/workflows/{workflow_id}"]["get"]["responses"]["200"]
    for path, operations in paths.items():
        if "{workflow_id}" not in path:
            continue
        for operation in operations.values():
            name = operation["operationId"]
            if "{job}" in path:
                status.setdefault("links", {})[name] = {
                    "operationId": name,
                    "parameters": {
                        "workflow_id": "$request.path.workflow_id",
                        "job": "$response.body#/jobs/0/name",
                    },
                }
            else:
                created.setdefault("links", {})[name] = {
                    "operationId": name,
                    "parameters": {"workflow_id": "$response.body#/id"},
                }


def _error_response(status: int) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {"error": {"type": "string"}},
        "required": ["error"],
    }
    return {"description": WHY[status], "content": {"application/json": {"schema": schema}}}


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's:
    GET and DELETE of /workflows/{id} are two routes)."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)
