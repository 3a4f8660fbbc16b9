"""The admin API's OpenAPI 3 document, served at GET /openapi.json and checked by schemathesis."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import __version__
from gateway.admin.auth import OPEN_READS
from gateway.responses import json_response

__all__ = ["openapi_document", "openapi_routes"]

openapi_routes = web.RouteTableDef()

_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}, "requestId": {"type": "string"}},
}
_STORE = {
    "type": "object",
    "required": ["backend", "healthy", "lastError", "lastSyncAgeSeconds", "invalidFlags"],
    "properties": {
        "backend": {"type": "string", "enum": ["memory", "redis"]},
        "healthy": {"type": "boolean"},
        "lastError": {"type": ["string", "null"]},
        "lastSyncAgeSeconds": {"type": ["number", "null"]},
        "invalidFlags": {"type": "array", "items": {"type": "string"}},
        "localOverrides": {"type": "array", "items": {"type": "string"}},
    },
}
_OPERATION = {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}
_FLAG = {
    "type": "object",
    "required": ["name", "percent", "routes"],
    "properties": {
        "name": {"type": "string"},
        "percent": {"type": "integer", "minimum": 0, "maximum": 100},
        "routes": {"type": "array", "items": {"type": "string"}},
        "localOverride": {
            "type": ["object", "null"],
            "description": "lowered on this instance during a flag-store outage, not yet written to the store",
        },
    },
}
_ROUTE = {
    "type": "object",
    "required": ["name", "prefix", "methods", "flag", "pin"],
    "properties": {
        "name": {"type": "string"},
        "prefix": {"type": "string"},
        "methods": {"type": ["array", "null"], "items": {"type": "string"}},
        "flag": {"type": ["string", "null"]},
        "pin": {"type": ["string", "null"], "enum": ["legacy", "candidate", None]},
    },
}
_CHANGE = {
    "type": "object",
    "required": ["flag", "old", "new", "actor", "reason", "at"],
    "properties": {
        "flag": {"type": "string"},
        "old": {"type": ["integer", "null"]},
        "new": {"type": "integer"},
        "actor": {"type": "string"},
        "reason": {"type": "string"},
        "at": {"type": "number"},
        "local": {"type": "boolean"},
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed request",
        401: "Missing or wrong admin token",
        403: "No admin token configured: changes and protected reads disabled",
        404: "Unknown flag, plan, action or route",
        409: "Refused: no config file to reload, a held flag, a drained upstream, a plan conflict, or a state "
        "file that does not fit this gateway (nothing imported)",
        413: "Body too large",
        422: "Invalid rules file; old rules kept",
        503: "Flag store unavailable; nothing changed",
    }
    return {str(code): _json({"$ref": "#/components/schemas/Error"}, text[code]) for code in codes}


_MUTATION_ERRORS = (400, 401, 403, 413, 503)


def openapi_document() -> dict[str, Any]:
    document = _document()
    for path, operations in document["paths"].items():
        read = operations.get("get")
        if read is None or path in OPEN_READS or "security" in read:
            continue
        read["security"] = [{}, {"adminToken": []}]  # open unless admin.protect_reads
        read["responses"].update(_errors(401, 403))
    return document


def _document() -> dict[str, Any]:
    ref = "#/components/schemas/"
    secured: list[dict[str, list[str]]] = [{"adminToken": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Cutover gateway admin API",
            "version": __version__,
            "description": (
                "Served on the admin listener only. Changes, stored parity mismatches and learned noise need "
                "the admin token; with admin.protect_reads every read does, except /healthz, /readyz, "
                "/metrics and this document."
            ),
        },
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _ERROR, "StoreHealth": _STORE, "Flag": _FLAG, "Route": _ROUTE, "Change": _CHANGE},
        },
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "responses": {
                        "200": _json(
                            {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
                            "Alive",
                        )
                    },
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: ready, degraded (still serving on last known values) or draining",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["status", "store"],
                                "properties": {
                                    "status": {"enum": ["ready", "degraded"]},
                                    "store": {"$ref": ref + "StoreHealth"},
                                },
                            },
                            "Serving",
                        ),
                        "503": _json(
                            {
                                "type": "object",
                                "required": ["status"],
                                "properties": {"status": {"const": "draining"}, "store": {"$ref": ref + "StoreHealth"}},
                            },
                            "Draining",
                        ),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus exposition",
                    "responses": {
                        "200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}
                    },
                }
            },
            "/api/v1/flags": {
                "get": {
                    "summary": "Every flag, the route table and the store's health",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["flags", "routes", "store"],
                                "properties": {
                                    "flags": {"type": "array", "items": {"$ref": ref + "Flag"}},
                                    "routes": {"type": "array", "items": {"$ref": ref + "Route"}},
                                    "store": {"$ref": ref + "StoreHealth"},
                                },
                            },
                            "Flags",
                        )
                    },
                }
            },
            "/api/v1/flags/{name}": {
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "get": {
                    "summary": "One flag",
                    "responses": {"200": _json({"$ref": ref + "Flag"}, "The flag"), **_errors(404)},
                },
                "put": {
                    "summary": "Set a flag's percentage",
                    "security": secured,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["percent"],
                                    "properties": {
                                        "percent": {"type": "integer", "minimum": 0, "maximum": 100},
                                        "reason": {"type": "string", "maxLength": 500},
                                        "operation": _OPERATION,
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["flag", "percent", "previous", "change"],
                                "properties": {
                                    "flag": {"type": "string"},
                                    "percent": {"type": "integer"},
                                    "previous": {"type": ["integer", "null"]},
                                    "change": {"$ref": ref + "Change"},
                                    "local": {"type": "boolean"},
                                },
                            },
                            "Changed",
                        ),
                        **_errors(*_MUTATION_ERRORS, 404, 409),
                    },
                },
            },
            "/api/v1/rollback": {
                "post": {
                    "summary": "Every flag to 0 in one atomic write",
                    "security": secured,
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "reason": {"type": "string", "maxLength": 500},
                                        "operation": _OPERATION,
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["rolledBack", "local"],
                                "properties": {
                                    "rolledBack": {"type": "array", "items": {"$ref": ref + "Change"}},
                                    "local": {"type": "boolean"},
                                },
                            },
                            "Rolled back",
                        ),
                        **_errors(*_MUTATION_ERRORS),
                    },
                }
            },
            "/api/v1/changes": {
                "get": {
                    "summary": "Audited changes, newest first (one flag's with ?flag=F)",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                        {"name": "flag", "in": "query", "required": False, "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["changes"],
                                "properties": {"changes": {"type": "array", "items": {"$ref": ref + "Change"}}},
                            },
                            "Changes",
                        ),
                        **_errors(400, 404, 503),
                    },
                }
            },
            "/api/v1/explain": {
                "get": {
                    "summary": "Which side a subject gets for a path, and why",
                    "parameters": [
                        {
                            "name": "subject",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 256},
                        },
                        {
                            "name": "path",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "pattern": "^/"},
                        },
                        {"name": "method", "in": "query", "required": False, "schema": {"type": "string"}},
                        {
                            "name": "force",
                            "in": "query",
                            "required": False,
                            "description": "as if the request carried X-Gateway-Force with the secret",
                            "schema": {"enum": ["legacy", "candidate"]},
                        },
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["subject", "route", "side", "reason"],
                                "properties": {
                                    "side": {"enum": ["legacy", "candidate"]},
                                    "reason": {"enum": ["pinned", "bucket"]},
                                },
                            },
                            "Explanation",
                        ),
                        **_errors(400),
                    },
                }
            },
            "/api/v1/forecast": {
                "get": {
                    "summary": "Share of recently seen subjects that would move at another percentage",
                    "parameters": [
                        {"name": "flag", "in": "query", "required": False, "schema": {"type": "string"}},
                        {
                            "name": "percent",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 0, "maximum": 100},
                        },
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": [
                                    "flag",
                                    "currentPercent",
                                    "targetPercent",
                                    "subjectsSeen",
                                    "wouldMove",
                                    "share",
                                ],
                            },
                            "Forecast",
                        ),
                        **_errors(400, 404),
                    },
                }
            },
            "/api/v1/reload": {
                "post": {
                    "summary": "Re-read the rules file (same as SIGHUP)",
                    "security": secured,
                    "responses": {
                        "200": _json({"type": "object", "required": ["reloaded"]}, "Reloaded"),
                        **_errors(401, 403, 409, 413, 422),
                    },
                }
            },
            "/api/v1/status": {
                "get": {
                    "summary": "Everything the status page shows",
                    "responses": {
                        "200": _json({"type": "object", "required": ["flags", "store", "upstreams"]}, "Status")
                    },
                }
            },
            "/api/v1/parity": {
                "get": {
                    "summary": "Parity report: one row per shadowed route",
                    "parameters": [{"name": "route", "in": "query", "required": False, "schema": {"type": "string"}}],
                    "responses": {
                        "200": _json({"type": "object", "required": ["routes"]}, "Report"),
                        **_errors(404, 503),
                    },
                },
                "delete": {
                    "summary": "Forget parity counters and stored mismatches",
                    "security": secured,
                    "responses": {
                        "200": _json({"type": "object", "required": ["reset"]}, "Reset"),
                        **_errors(401, 403, 503),
                    },
                },
            },
            "/api/v1/parity/diffs": {
                "get": {
                    "summary": "Latest stored mismatches of a route, newest first",
                    "parameters": [
                        {
                            "name": "route",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                    ],
                    "security": secured,
                    "responses": {
                        "200": _json({"type": "object", "required": ["route", "scope", "mismatches"]}, "Mismatches"),
                        **_errors(400, 401, 403, 404, 503),
                    },
                }
            },
            "/api/v1/parity/noise": {
                "get": {
                    "summary": "Fields learned as noise, per route",
                    "security": secured,
                    "responses": {
                        "200": _json({"type": "object", "required": ["scope", "noise"]}, "Noise"),
                        **_errors(401, 403, 503),
                    },
                },
                "delete": {
                    "summary": "Forget learned noise (all routes, or ?route=R)",
                    "security": secured,
                    "parameters": [{"name": "route", "in": "query", "required": False, "schema": {"type": "string"}}],
                    "responses": {
                        "200": _json({"type": "object", "required": ["reset"]}, "Reset"),
                        **_errors(401, 403, 503),
                    },
                },
            },
            "/api/v1/safety": {
                "get": {
                    "summary": "Every trigger's verdict per flag, held flags, the safety store's state",
                    "responses": {"200": _json({"type": "object", "required": ["enabled", "held", "flags"]}, "Safety")},
                }
            },
            "/api/v1/events": {
                "get": {
                    "summary": "Safety events (rollbacks, dry runs, acknowledgements, plan steps), newest first",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        }
                    ],
                    "responses": {
                        "200": _json({"type": "object", "required": ["events"]}, "Events"),
                        **_errors(400, 503),
                    },
                }
            },
            "/api/v1/events/ack": {
                "post": {
                    "summary": "Acknowledge an automatic rollback so the flag may be raised again",
                    "security": secured,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["flag"],
                                    "properties": {
                                        "flag": {"type": "string", "minLength": 1},
                                        "reason": {"type": "string", "maxLength": 500},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json({"type": "object", "required": ["acknowledged"]}, "Acknowledged"),
                        **_errors(*_MUTATION_ERRORS, 404, 409),
                    },
                }
            },
            "/api/v1/plans": {
                "get": {
                    "summary": "Every rollout plan with its status",
                    "responses": {"200": _json({"type": "object", "required": ["plans"]}, "Plans"), **_errors(503)},
                }
            },
            "/api/v1/plans/{flag}": {
                "parameters": [{"name": "flag", "in": "path", "required": True, "schema": {"type": "string"}}],
                "get": {
                    "summary": "One plan: step, time in step, time to next step, trigger health",
                    "responses": {"200": _json({"type": "object"}, "Plan"), **_errors(404, 503)},
                },
                "post": {
                    "summary": "Start a rollout plan",
                    "security": secured,
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "steps": {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": 100,
                                            "description": (
                                                "strictly increasing, all above the flag's current percentage "
                                                "(else 409 plan_steps_not_increasing / plan_below_current)"
                                            ),
                                            "items": {"type": "integer", "minimum": 1, "maximum": 100},
                                        },
                                        "soak": {"type": "number", "exclusiveMinimum": 0},
                                        "minRequests": {"type": "integer", "minimum": 0},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {"200": _json({"type": "object"}, "Started"), **_errors(*_MUTATION_ERRORS, 404, 409)},
                },
            },
            "/api/v1/plans/{flag}/{action}": {
                "parameters": [
                    {"name": "flag", "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "action",
                        "in": "path",
                        "required": True,
                        "schema": {"enum": ["pause", "resume", "abort", "skip"]},
                    },
                ],
                "post": {
                    "summary": "Pause, resume, abort or skip a step of a plan",
                    "security": secured,
                    "responses": {"200": _json({"type": "object"}, "Changed"), **_errors(*_MUTATION_ERRORS, 404, 409)},
                },
            },
            "/api/v1/readonly": {
                "get": {
                    "summary": "Legacy read-only policy in force, per flag ('*' = every route)",
                    "responses": {"200": _json({"type": "object", "required": ["readOnly"]}, "Policies")},
                }
            },
            "/api/v1/readonly/{flag}": {
                "parameters": [{"name": "flag", "in": "path", "required": True, "schema": {"type": "string"}}],
                "put": {
                    "summary": "Switch legacy read-only for a flag: refuse writes, send them to the candidate, or off",
                    "security": secured,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["mode"],
                                    "properties": {
                                        "mode": {"enum": ["reject", "candidate", "off"]},
                                        "retryAfter": {"type": "integer", "minimum": 0},
                                        "reason": {"type": "string", "maxLength": 500},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json({"type": "object", "required": ["readOnly"]}, "Switched"),
                        **_errors(*_MUTATION_ERRORS, 404),
                    },
                },
            },
            "/api/v1/state": {
                "get": {
                    "summary": "The operator state: flags, holds, plans, read-only switches, drained upstreams, noise",
                    "responses": {
                        "200": _json({"type": "object", "required": ["format", "flags"]}, "State"),
                        **_errors(503),
                    },
                },
                "post": {
                    "summary": "Restore an exported state: validated whole, applied atomically or not at all",
                    "security": secured,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["state"],
                                    "properties": {
                                        "state": {"type": "object"},
                                        "reason": {"type": "string", "maxLength": 500},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json({"type": "object", "required": ["flagsChanged", "warnings"]}, "Imported"),
                        **_errors(*_MUTATION_ERRORS, 409),
                    },
                },
            },
            "/api/v1/readiness": {
                "get": {
                    "summary": "Per flag: the next step (raise the percentage, 100%, legacy read-only, decommission), "
                    "the verdict (ready, not_ready, not_enough_traffic) and every success criterion with its value, "
                    "threshold, sample size and window",
                    "parameters": [
                        {
                            "name": "flag",
                            "in": "query",
                            "required": False,
                            "description": "only this flag",
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["scope", "thresholds", "flags", "dataChecks"],
                                "properties": {
                                    "flags": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": [
                                                "flag",
                                                "percent",
                                                "nextStep",
                                                "verdict",
                                                "summary",
                                                "criteria",
                                            ],
                                            "properties": {
                                                "verdict": {"enum": ["ready", "not_ready", "not_enough_traffic"]},
                                                "criteria": {"type": "array", "items": {"type": "object"}},
                                            },
                                        },
                                    }
                                },
                            },
                            "Readiness report",
                        ),
                        **_errors(404, 409, 503),
                    },
                },
            },
            "/api/v1/datachecks": {
                "get": {
                    "summary": "Every data check's latest result: ok, failing, unreachable, error or pending "
                    "(the DSN is never shown, only the environment variable that holds it)",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["checks"],
                                "properties": {"checks": {"type": "array", "items": {"type": "object"}}},
                            },
                            "Data checks",
                        )
                    },
                },
            },
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": _json({"type": "object"}, "OpenAPI")}}
            },
        },
    }


@openapi_routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())
