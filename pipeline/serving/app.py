"""The HTTP routes of `python -m pipeline serve`: one ASGI application for uvicorn.

    TF Serving's REST API (V1), pipeline/serving/rest.py
    POST /v1/models/<name>[/versions/<n>]:predict      row ("instances") or columnar ("inputs") format
    GET  /v1/models/<name>[/versions/<n>]               status (model_version_status)
    GET  /v1/models/<name>[/versions/<n>]/metadata      signatures (GetModelMetadata's signature_def)
    Open Inference Protocol (V2), pipeline/serving/v2.py
    POST /v2/models/<name>[/versions/<n>]/infer
    GET  /v2/models/<name>[/versions/<n>]               model metadata (inputs, outputs, datatypes, shapes)
    GET  /v2/models/<name>[/versions/<n>]/ready, /v2/health/live, /v2/health/ready, /v2 (server metadata)
    Prometheus text (pipeline/serving/metrics.py)
    GET  /metrics (KServe's path), /monitoring/prometheus/metrics (TF Serving's)

The two inference routes are answered by `ServingApp` itself, straight from the ASGI messages; every other
request goes to a FastAPI application. Why: FastAPI's per-request machinery (middleware stack, dependency
solving, Request/Response objects) was most of the event loop's work, and the event loop is one thread on a
2-core machine: 0.31 ms of its CPU per request through a FastAPI route, 0.18 ms straight from ASGI
(mnist_lenet, one JPEG per request, batching on, concurrency 8; /proc thread times, 2026-12-02), next to
about 0.5 ms of model CPU per image in a batch of 8. uvicorn still does all of HTTP (httptools parsing,
keep-alive, graceful shutdown).
"""

# No `from __future__ import annotations`: FastAPI reads the route functions' annotations.
import json
import re
import time

from pipeline.serving import rest, v2

_V1_PREDICT = re.compile(r"/v1/models/([^/]+?)(?:/versions/([^/]+))?:predict")
_V2_INFER = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
_JSON_HEADERS = [(b"content-type", b"application/json")]
SERVER_NAME = "pipeline-serve"


class _ClientGone(Exception):
    """The client closed the connection before its body arrived: nothing to answer."""


def dumps(document) -> bytes:
    """JSON as Starlette's JSONResponse writes it (UTF-8, no NaN: a NaN output is an error, not bad JSON)."""
    return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def protocol_of(path: str) -> str:
    """The `protocol` label of a request path in the metrics."""
    if path.startswith("/v1/"):
        return "v1"
    if path == "/v2" or path.startswith("/v2/"):
        return "v2"
    return "other"


class ServingApp:
    """ASGI application: the inference routes here, the rest through FastAPI; every answer is counted."""

    def __init__(self, server):
        self.server = server
        self.routes = build_routes(server)
        self._handlers = (("v1", _V1_PREDICT, server.predict), ("v2", _V2_INFER, server.infer))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # lifespan is off in uvicorn.Config; websockets go to FastAPI's 404
            await self.routes(scope, receive, send)
            return
        started = time.perf_counter()
        if scope["method"] == "POST":
            for protocol, pattern, handler in self._handlers:
                match = pattern.fullmatch(scope["path"])
                if match is not None:
                    await self._inference(protocol, handler, match.groups(), scope, receive, send, started)
                    return
        answered = []

        async def counted_send(message):
            if message["type"] == "http.response.start":
                answered.append(message["status"])
            await send(message)

        await self.routes(scope, receive, counted_send)
        if answered:
            self.server.metrics.record_request(protocol_of(scope["path"]), answered[0])

    async def _inference(self, protocol, handler, groups, scope, receive, send, started):
        try:
            body = await self._read_body(scope, receive)
            status, payload = 200, dumps(await handler(*groups, body))
        except rest.RestRefusal as refused:
            status, payload = refused.status, dumps(rest.error_body(refused.message))
        except _ClientGone:
            return
        except Exception as error:  # noqa: BLE001  (a bug, never a user's request: still JSON, with the type)
            status, payload = 500, dumps(rest.error_body(f"internal error ({type(error).__name__}: {error})"))
        headers = [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode("ascii"))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        self.server.metrics.record_request(protocol, status, time.perf_counter() - started)

    async def _read_body(self, scope, receive) -> bytes:
        """The request body, refused with 413 once it is over --max-body-bytes (declared or received)."""
        limit = self.server.max_body_bytes
        for key, value in scope["headers"]:
            if key == b"content-length":
                if value.isdigit() and int(value) > limit:
                    raise rest.RestRefusal(
                        rest.PAYLOAD_TOO_LARGE,
                        f"request body of {value.decode()} bytes is over the limit of {limit} bytes (--max-body-bytes)",
                    )
                break
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise rest.RestRefusal(
                    rest.PAYLOAD_TOO_LARGE, f"request body over the limit of {limit} bytes (--max-body-bytes)"
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def build_routes(server):
    """The FastAPI application of the GET routes (status, metadata, health, metrics) and of the JSON 404s."""
    import fastapi
    from fastapi import responses
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    from pipeline.serving import metrics

    app = fastapi.FastAPI(title="pipeline serve", docs_url=None, redoc_url=None, openapi_url=None)

    def error(status: int, message: str):
        return responses.JSONResponse(rest.error_body(message), status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):  # unknown paths and methods: JSON like every other error
        return error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):
        return error(rest.INVALID_ARGUMENT, f"invalid request: {exc.errors()}")

    @app.exception_handler(rest.RestRefusal)
    async def refused(request, exc):
        return error(exc.status, exc.message)

    @app.exception_handler(Exception)
    async def unexpected(request, exc):  # a bug, never a user's request: still JSON, with the type
        return error(500, f"internal error ({type(exc).__name__}: {exc})")

    def status(name: str, version: str | None):
        server.served(name, None)
        number = int(version) if version is not None and version.isdigit() else None
        entries = server.store.status(number)
        if version is not None and (number is None or not entries):
            raise rest.RestRefusal(rest.NOT_FOUND, f"Could not find version {version} of model {name}")
        return {"model_version_status": entries}

    def metadata(name: str, version: str | None):
        loaded = server.served(name, version)
        spec = {"name": name, "signature_name": "", "version": str(loaded.version)}
        return {"model_spec": spec, "metadata": {"signature_def": loaded.metadata}}

    def v2_metadata(name: str, version: str | None):
        loaded = server.served(name, version)
        return v2.model_metadata(name=name, version=loaded.version, tensor_specs=loaded.tensor_specs)

    def v2_ready(name: str, version: str | None):
        server.served(name, version)  # 404 when not served; loaded and warmed up otherwise
        return {"name": name, "ready": True}

    def prometheus():
        return responses.Response(server.metrics.exposition(), media_type=metrics.CONTENT_TYPE)

    app.get("/v1/models/{name}")(lambda name: status(name, None))
    app.get("/v1/models/{name}/versions/{version}")(lambda name, version: status(name, version))
    app.get("/v1/models/{name}/metadata")(lambda name: metadata(name, None))
    app.get("/v1/models/{name}/versions/{version}/metadata")(lambda name, version: metadata(name, version))
    # The port opens only once the model is loaded and warmed up, so a server that answers is ready.
    app.get("/v2")(lambda: {"name": SERVER_NAME, "version": "2", "extensions": []})
    app.get("/v2/health/live")(lambda: {"live": True})
    app.get("/v2/health/ready")(lambda: {"ready": True})
    app.get("/v2/models/{name}")(lambda name: v2_metadata(name, None))
    app.get("/v2/models/{name}/versions/{version}")(lambda name, version: v2_metadata(name, version))
    app.get("/v2/models/{name}/ready")(lambda name: v2_ready(name, None))
    app.get("/v2/models/{name}/versions/{version}/ready")(lambda name, version: v2_ready(name, version))
    app.get("/metrics")(prometheus)
    app.get("/monitoring/prometheus/metrics")(prometheus)
    return app
