"""`python -m pipeline serve EXPORT_OR_RUN_DIR`: an HTTP model server speaking TF Serving's REST API (V1) and
the Open Inference Protocol (V2), with Prometheus metrics; the routes are listed in pipeline/serving/app.py.

Built on FastAPI and uvicorn, the stack of KServe's Python model server: `kserve` itself requires
protobuf < 7 and pandas < 3 in every released version (0.15-0.21), and installing it would downgrade the
protobuf 7 TensorFlow 2.21 runs with here (pip install --dry-run kserve==0.21.0). A client written for TF
Serving or for KServe's V2 protocol works unchanged; every refused request is a 4xx `{"error": "..."}` with
TF Serving's status for its error code (pipeline/serving/rest.py). The port opens only once the model is
loaded and its warm-up requests replayed (pipeline/serving/warmup.py); SIGTERM or Ctrl-C stop accepting
connections, let the requests in flight finish, then exit.
"""

# No `from __future__ import annotations` in modules with FastAPI routes (app.py): FastAPI reads their
# annotations. fastapi and uvicorn are imported inside functions only, so that `--help` does not import them.
import argparse
import asyncio
import json
import signal
import socket
import sys
import time
from pathlib import Path

from pipeline.config.arguments import int_at_least
from pipeline.core import errors, fileio

HELP = "serve an export over HTTP: TF Serving's REST API (V1) and the Open Inference Protocol (V2)"
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
LARGE_BODY_BYTES = 64 * 1024
DEFAULT_MAX_BATCH_SIZE = 64  # images per request without --batching-parameters (with it: its max_batch_size)


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
    parser.add_argument(
        "--port", type=int_at_least(0, 65535), default=8501, help="TF Serving's REST port (default 8501)"
    )
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
        type=int_at_least(1),
        default=DEFAULT_MAX_BATCH_SIZE,
        help=f"images per request without batching (default {DEFAULT_MAX_BATCH_SIZE})",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int_at_least(1),
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest request body accepted (default 16 MiB); larger ones get 413",
    )
    parser.add_argument("--threads", type=int_at_least(1), default=2, help="model calls at once without batching")
    parser.add_argument(
        "--max-queued",
        type=int_at_least(1),
        default=64,
        help="requests waiting for the model without batching before 503 (default 64)",
    )
    parser.add_argument(
        "--poll-seconds",
        type=_seconds,
        default=1.0,
        help="how often to look for a new version folder (0: never; TF Serving's default 1)",
    )
    # TF Serving's --tensorflow_intra_op_parallelism / --tensorflow_inter_op_parallelism. On the 2-core machine
    # 1 and 1 cost less CPU per model call (mnist_lenet's serving_default in-process, 2026-12-02: 0.8 instead of
    # 1.6 ms for one image, 0.40 instead of 0.58 ms an image in calls of 32), at the price of one core a call.
    for kind in ("intra", "inter"):
        parser.add_argument(
            f"--tensorflow-{kind}-op-parallelism",
            type=int_at_least(0),
            default=0,
            help=f"TensorFlow's {kind}-op threads (0: TensorFlow's choice, one per core)",
        )


class Server:
    """The model store, the runners and the metrics of one `serve` process; the protocols' handlers.

    `predict` (V1) and `infer` (V2) take a request body and answer a JSON-ready dict or raise
    `rest.RestRefusal`; both send `serving_default` requests through the same runner (the batcher when
    batching is on). The HTTP routes are in pipeline/serving/app.py.
    """

    def __init__(
        self, store, *, batching=None, max_batch_size: int, max_body_bytes: int, threads: int, max_queued: int
    ):
        from pipeline.serving import batching as batching_lib
        from pipeline.serving import metrics

        self.store = store
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics.ServingMetrics()
        if batching is not None:
            self.max_instances = batching.max_batch_size
            self.runner = batching_lib.Batcher(self._run_default, batching, on_batch=self.metrics.record_batch)
        else:
            self.max_instances = max_batch_size
            self.runner = batching_lib.DirectRunner(
                self._run_default, num_threads=threads, max_queued=max_queued, on_batch=self.metrics.record_batch
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
        """The ASGI application serving both protocols, the metrics and the status routes."""
        from pipeline.serving import app

        return app.ServingApp(self)

    def served(self, name: str, version: str | None):
        """The loaded version a request names (None: the latest); raises RestRefusal 404 when not served."""
        from pipeline.serving import rest

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

    async def predict(self, name: str, version: str | None, body: bytes) -> dict:
        """A V1 `:predict` body -> TF Serving's response object (pipeline/serving/rest.py)."""
        from pipeline.serving import rest

        loaded = self.served(name, version)
        parsed = await _parsed(
            rest.parse_predict_body, body, signatures=loaded.signatures, max_instances=self.max_instances
        )
        outputs = await self._run(loaded, parsed.signature_name, parsed.values, "instance {}")
        return rest.format_predictions(outputs, columnar=parsed.columnar)

    async def infer(self, name: str, version: str | None, body: bytes) -> dict:
        """A V2 `infer` body -> the Open Inference Protocol's response object (pipeline/serving/v2.py)."""
        from pipeline.serving import v2

        loaded = self.served(name, version)
        parsed = await _parsed(
            v2.parse_infer_body, body, tensor_specs=loaded.tensor_specs, max_instances=self.max_instances
        )
        input_name = loaded.signatures[parsed.signature_name][0]
        outputs = await self._run(loaded, parsed.signature_name, parsed.values, f"input {input_name!r} element {{}}")
        return v2.format_infer_response(
            outputs, model_name=self.store.name, model_version=loaded.version, request=parsed
        )

    async def _run(self, loaded, signature_name: str, values: list, where: str) -> dict:
        """Runs a signature through its runner; a failure becomes the RestRefusal naming the bad image."""
        from pipeline.serving import batching as batching_lib
        from pipeline.serving import rest

        try:
            if signature_name == "serving_default":
                future = self.runner.submit(values)
            else:
                future = self.other_runner.submit((signature_name, values))
        except batching_lib.QueueFull as full:
            raise rest.RestRefusal(rest.UNAVAILABLE, str(full)) from None
        try:
            return await asyncio.wrap_future(future)
        except Exception as failure:  # noqa: BLE001  (explained below)
            raise await asyncio.to_thread(_explain, failure, loaded, signature_name, values, where) from None


async def _parsed(parse, body: bytes, **options):
    # Small bodies are parsed on the event loop (a thread hand-off costs more than the parse); large ones
    # (up to --max-body-bytes of base64 or pixel lists) in a thread, not to stall the other requests.
    if len(body) < LARGE_BODY_BYTES:
        return parse(body, **options)
    return await asyncio.to_thread(parse, body, **options)


def _explain(failure: Exception, loaded, signature_name: str, values: list, where: str):
    """The RestRefusal for a failed model call. TF Serving fails the whole request when one image cannot be
    decoded (INVALID_ARGUMENT, 400); to name that image, the request's images are tried one at a time.
    `where` names an image by its index ("instance {}")."""
    import tensorflow as tf

    from pipeline.serving import predict, rest

    if not isinstance(failure, tf.errors.InvalidArgumentError):
        return rest.RestRefusal(500, f"internal error ({type(failure).__name__}: {predict.error_detail(failure)})")
    if loaded.signatures[signature_name][1] != "string":
        return rest.RestRefusal(rest.INVALID_ARGUMENT, predict.error_detail(failure))
    for index, value in enumerate(values):
        try:
            loaded.run(signature_name, [value])
        except tf.errors.InvalidArgumentError as error:
            return rest.RestRefusal(
                rest.INVALID_ARGUMENT, f"{where.format(index)}: {predict.failure_reason(value, error)}"
            )
    return rest.RestRefusal(rest.INVALID_ARGUMENT, predict.error_detail(failure))


def run(args) -> int:
    """The `serve` command: load, warm up, listen until SIGTERM/SIGINT. Returns the exit code."""
    import uvicorn

    from pipeline.serving import batching, model_store

    parameters = batching.read_batching_parameters(args.batching_parameters) if args.batching_parameters else None
    _check_address(args.host, args.port)  # before the load, not after it
    started = time.monotonic()
    _set_tensorflow_threads(intra=args.tensorflow_intra_op_parallelism, inter=args.tensorflow_inter_op_parallelism)
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
        proxy_headers=False,  # X-Forwarded-* are not used; spares a middleware on every request
        timeout_graceful_shutdown=30,
        lifespan="off",
    )
    http = uvicorn.Server(config)
    store.start_polling()
    log(
        f"ready in {time.monotonic() - started:.1f} s: http://{args.host}:{args.port}/v1/models/{store.name} "
        f"and /v2/models/{store.name} (version {store.current.version})"
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
        totals = {"model_calls": server.metrics.model_calls, "images": server.metrics.images}
        log(json.dumps({"stopped": True, **totals}))
    return 0 if http.started else 1


def _set_tensorflow_threads(*, intra: int, inter: int) -> None:
    """Sizes TensorFlow's thread pools (before the first op runs; 0 leaves TensorFlow's default)."""
    import tensorflow as tf

    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)


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
