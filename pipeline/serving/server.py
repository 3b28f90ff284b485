"""`python -m pipeline serve EXPORT_OR_RUN_DIR`: an HTTP model server speaking TF Serving's REST API (V1).

    POST /v1/models/<name>[/versions/<n>]:predict   row ("instances") or columnar ("inputs") format
    GET  /v1/models/<name>[/versions/<n>]            status (model_version_status)
    GET  /v1/models/<name>[/versions/<n>]/metadata   signatures (GetModelMetadata's signature_def)
    GET  /monitoring/prometheus/metrics              model calls and images so far (Prometheus text)

Built on FastAPI and uvicorn, the stack of KServe's Python model server: `kserve` itself requires
protobuf < 7 and pandas < 3 in every released version (0.15-0.21), and installing it would downgrade the
protobuf 7 TensorFlow 2.21 runs with here (pip install --dry-run kserve==0.21.0). A client written for TF
Serving works unchanged; every refused request is a 4xx `{"error": "..."}` with TF Serving's status for
its error code (pipeline/serving/rest.py). The port opens only once the model is loaded and its warm-up
requests replayed (pipeline/serving/warmup.py); SIGTERM or Ctrl-C stop accepting connections, let the
requests in flight finish, then exit.
"""

# No `from __future__ import annotations`: FastAPI reads the route functions' annotations (fastapi.Request),
# and fastapi is imported inside `Server.app` only, so that `--help` does not import it.
import argparse
import asyncio
import functools
import json
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from pipeline.core import errors, fileio

HELP = "serve an export over HTTP with TF Serving's REST API (predict, status, metadata)"
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
LARGE_BODY_BYTES = 64 * 1024
DEFAULT_MAX_BATCH_SIZE = 64  # images per request without --batching-parameters (with it: its max_batch_size)


def _at_least(low: int, high: int | None = None):
    """An argparse type: an integer in [low, high] (argparse reports a bad one and exits with code 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer; received {text!r}") from None
        if value < low or (high is not None and value > high):
            allowed = f"{low}..{high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {allowed}; received {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds; received {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0; received {value}")
    return value


def add_arguments(parser) -> None:
    parser.add_argument(
        "export_dir",
        type=Path,
        metavar="EXPORT_OR_RUN_DIR",
        help="run directory, export/<name> (newest version, new ones picked up) or one version folder",
    )
    parser.add_argument("--port", type=_at_least(0, 65535), default=8501, help="TF Serving's REST port (default 8501)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1 only)")
    parser.add_argument("--model-name", help="name in the URLs (default: the export's folder name)")
    parser.add_argument(
        "--batching-parameters",
        type=Path,
        metavar="FILE",
        help="TF Serving's batching_parameters.txt; turns dynamic batching on",
    )
    parser.add_argument(
        "--max-batch-size",
        type=_at_least(1),
        default=DEFAULT_MAX_BATCH_SIZE,
        help=f"images per request without batching (default {DEFAULT_MAX_BATCH_SIZE})",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=_at_least(1),
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest request body accepted (default 16 MiB); larger ones get 413",
    )
    parser.add_argument("--threads", type=_at_least(1), default=2, help="model calls at once without batching")
    parser.add_argument(
        "--max-queued",
        type=_at_least(1),
        default=64,
        help="requests waiting for the model without batching before 503 (default 64)",
    )
    parser.add_argument(
        "--poll-seconds",
        type=_seconds,
        default=1.0,
        help="how often to look for a new version folder (0: never; TF Serving's default 1)",
    )


class Server:
    """The model store, the runners and the HTTP routes of one `serve` process."""

    def __init__(
        self, store, *, batching=None, max_batch_size: int, max_body_bytes: int, threads: int, max_queued: int
    ):
        from pipeline.serving import batching as batching_lib

        self.store = store
        self.max_body_bytes = max_body_bytes
        self.model_calls = 0  # with `images`: the mean batch size (/monitoring/prometheus/metrics)
        self.images = 0
        counting = threading.Lock()

        def record(size: int):
            with counting:
                self.model_calls += 1
                self.images += size

        if batching is not None:
            self.max_instances = batching.max_batch_size
            self.runner = batching_lib.Batcher(self._run_default, batching, on_batch=record)
        else:
            self.max_instances = max_batch_size
            self.runner = batching_lib.DirectRunner(
                self._run_default, num_threads=threads, max_queued=max_queued, on_batch=record
            )
        # Other signatures (serve_images: images of any size, so no shared batches) run one request at a time.
        self.other_runner = batching_lib.DirectRunner(self._run_other, num_threads=threads, max_queued=max_queued)

    def _run_default(self, values):
        return self.store.current.run("serving_default", values)

    def _run_other(self, item):
        signature_name, values = item
        return self.store.current.run(signature_name, values)

    def stop(self):
        self.store.stop()
        self.runner.stop()
        self.other_runner.stop()

    def app(self):
        import fastapi
        from fastapi import responses
        from fastapi.exceptions import RequestValidationError
        from starlette.exceptions import HTTPException

        from pipeline.serving import rest

        app = fastapi.FastAPI(title="pipeline serve", docs_url=None, redoc_url=None, openapi_url=None)

        def error(status: int, message: str):
            return responses.JSONResponse(rest.error_body(message), status_code=status)

        @app.exception_handler(HTTPException)
        async def http_error(request, exc):  # unknown paths and methods: JSON like every other error
            return error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")

        @app.exception_handler(RequestValidationError)
        async def invalid(request, exc):
            return error(rest.INVALID_ARGUMENT, f"invalid request: {exc.errors()}")

        @app.exception_handler(Exception)
        async def unexpected(request, exc):  # a bug, never a user's request: still JSON, with the type
            return error(500, f"internal error ({type(exc).__name__}: {exc})")

        def served(name: str, version: str | None):
            if name != self.store.name:
                raise rest.RestRefusal(
                    rest.NOT_FOUND,
                    f"Servable not found for request: Latest({name}); this server serves {self.store.name!r}",
                )
            number = None
            if version is not None:
                if not version.isdigit():
                    raise rest.RestRefusal(rest.NOT_FOUND, f"version must be a number; received {version!r}")
                number = int(version)
            loaded = self.store.version(number)
            if loaded is None:
                raise rest.RestRefusal(
                    rest.NOT_FOUND,
                    f"Servable not found for request: Specific({name}, {number}); "
                    f"served: version {self.store.current.version}",
                )
            return loaded

        async def read_body(request) -> bytes:
            declared = request.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
                raise rest.RestRefusal(
                    rest.PAYLOAD_TOO_LARGE,
                    f"request body of {declared} bytes is over the limit of "
                    f"{self.max_body_bytes} bytes (--max-body-bytes)",
                )
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise rest.RestRefusal(
                        rest.PAYLOAD_TOO_LARGE,
                        f"request body over the limit of {self.max_body_bytes} bytes (--max-body-bytes)",
                    )
                chunks.append(chunk)
            return b"".join(chunks)

        async def predict(request, name: str, version: str | None):
            from pipeline.serving import batching as batching_lib

            try:
                loaded = served(name, version)
                body = await read_body(request)
                parse = functools.partial(
                    rest.parse_predict_body, body, signatures=loaded.signatures, max_instances=self.max_instances
                )
                # Small bodies are parsed on the event loop (a thread hand-off costs more than the parse);
                # large ones (up to --max-body-bytes of base64 or pixel lists) in a thread, not to stall the rest.
                parsed = parse() if len(body) < LARGE_BODY_BYTES else await asyncio.to_thread(parse)
                try:
                    if parsed.signature_name == "serving_default":
                        future = self.runner.submit(parsed.values)
                    else:
                        future = self.other_runner.submit((parsed.signature_name, parsed.values))
                except batching_lib.QueueFull as full:
                    raise rest.RestRefusal(rest.UNAVAILABLE, str(full)) from None
                try:
                    outputs = await asyncio.wrap_future(future)
                except Exception as failure:  # noqa: BLE001  (explained below)
                    raise await asyncio.to_thread(_explain, failure, loaded, parsed) from None
                return responses.JSONResponse(rest.format_predictions(outputs, columnar=parsed.columnar))
            except rest.RestRefusal as refused:
                return error(refused.status, refused.message)

        def status(name: str, version: str | None):
            try:
                served(name, None)
                number = int(version) if version is not None and version.isdigit() else None
                entries = self.store.status(number)
                if version is not None and (number is None or not entries):
                    raise rest.RestRefusal(rest.NOT_FOUND, f"Could not find version {version} of model {name}")
                return responses.JSONResponse({"model_version_status": entries})
            except rest.RestRefusal as refused:
                return error(refused.status, refused.message)

        def metadata(name: str, version: str | None):
            try:
                loaded = served(name, version)
            except rest.RestRefusal as refused:
                return error(refused.status, refused.message)
            spec = {"name": name, "signature_name": "", "version": str(loaded.version)}
            return responses.JSONResponse({"model_spec": spec, "metadata": {"signature_def": loaded.metadata}})

        @app.post("/v1/models/{name}:predict")
        async def predict_latest(name: str, request: fastapi.Request):
            return await predict(request, name, None)

        @app.post("/v1/models/{name}/versions/{version}:predict")
        async def predict_version(name: str, version: str, request: fastapi.Request):
            return await predict(request, name, version)

        @app.get("/monitoring/prometheus/metrics")
        def metrics():  # TF Serving's path for its Prometheus metrics; here the batching counters
            lines = [
                "# TYPE pipeline_serve_model_calls_total counter",
                f"pipeline_serve_model_calls_total {self.model_calls}",
                "# TYPE pipeline_serve_images_total counter",
                f"pipeline_serve_images_total {self.images}",
            ]
            return responses.PlainTextResponse("\n".join(lines) + "\n")

        app.get("/v1/models/{name}")(lambda name: status(name, None))
        app.get("/v1/models/{name}/versions/{version}")(lambda name, version: status(name, version))
        app.get("/v1/models/{name}/metadata")(lambda name: metadata(name, None))
        app.get("/v1/models/{name}/versions/{version}/metadata")(lambda name, version: metadata(name, version))
        return app


def _explain(failure: Exception, loaded, parsed):
    """The RestRefusal for a failed model call. TF Serving fails the whole request when one image cannot be
    decoded (INVALID_ARGUMENT, 400); to name that image, the request's images are tried one at a time."""
    import tensorflow as tf

    from pipeline.serving import predict, rest

    if not isinstance(failure, tf.errors.InvalidArgumentError):
        return rest.RestRefusal(500, f"internal error ({type(failure).__name__}: {predict.error_detail(failure)})")
    if loaded.signatures[parsed.signature_name][1] != "string":
        return rest.RestRefusal(rest.INVALID_ARGUMENT, predict.error_detail(failure))
    for index, value in enumerate(parsed.values):
        try:
            loaded.run(parsed.signature_name, [value])
        except tf.errors.InvalidArgumentError as error:
            return rest.RestRefusal(rest.INVALID_ARGUMENT, f"instance {index}: {predict.failure_reason(value, error)}")
    return rest.RestRefusal(rest.INVALID_ARGUMENT, predict.error_detail(failure))


def run(args) -> int:
    """The `serve` command: load, warm up, listen until SIGTERM/SIGINT. Returns the exit code."""
    import uvicorn

    from pipeline.serving import batching, model_store

    parameters = batching.read_batching_parameters(args.batching_parameters) if args.batching_parameters else None
    _check_address(args.host, args.port)  # before the load, not after it
    started = time.monotonic()
    log = _logger()
    store = model_store.ModelStore(args.export_dir, model_name=args.model_name, poll_seconds=args.poll_seconds, log=log)
    server = Server(
        store,
        batching=parameters,
        max_batch_size=args.max_batch_size,
        max_body_bytes=args.max_body_bytes,
        threads=args.threads,
        max_queued=args.max_queued,
    )
    if parameters is not None:
        log(
            f"batching: max_batch_size {parameters.max_batch_size}, batch_timeout_micros "
            f"{parameters.batch_timeout_micros}, max_enqueued_batches {parameters.max_enqueued_batches}, "
            f"num_batch_threads {parameters.num_batch_threads}"
            + (f" (not used here: {', '.join(parameters.ignored)})" if parameters.ignored else "")
        )
    config = uvicorn.Config(
        server.app(),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
        lifespan="off",
    )
    http = uvicorn.Server(config)
    store.start_polling()
    log(
        f"ready in {time.monotonic() - started:.1f} s: http://{args.host}:{args.port}/v1/models/{store.name} "
        f"(version {store.current.version})"
    )
    # uvicorn handles SIGTERM/SIGINT (stop accepting, finish the requests in flight) and then raises the
    # signal again for the handler it found; a no-op one lets this function stop the batch threads and
    # return 0 (a graceful stop) instead of dying of the signal or raising KeyboardInterrupt.
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: None)
    try:
        http.run()
    finally:
        server.stop()
        log(json.dumps({"stopped": True, "model_calls": server.model_calls, "images": server.images}))
    return 0 if http.started else 1


class ServeError(errors.UserError):
    """The server cannot start as asked; the message says why and what to change."""


def _check_address(host: str, port: int) -> None:
    """Raises ServeError when the address cannot be listened on (in use, not this machine's)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ServeError(
                f"--host {host} --port {port}: cannot listen there ({fileio.os_reason(error)}); "
                f"choose another --port (or stop what uses it)"
            ) from None


def _logger():
    def log(message: str):
        print(f"serve: {message}", file=sys.stderr, flush=True)

    return log
