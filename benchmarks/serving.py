"""`python -m pipeline serve` under a bounded load on 127.0.0.1: batching off vs on, against `predict`'s ceiling.

    .venv/bin/python -m benchmarks.serving --run-dir runs/mnist_lenet/<time> [--requests 2000]

Takes a trained run, exports its best checkpoint twice into a temporary folder (with and without TF
Serving's warm-up file; the run is not changed), and measures:
- the in-process ceiling: `predict`'s Predictor on the same JPEGs, one image per call and 32 per call;
- first-request latency after the server reports ready, with and without warm-up;
- for batching off and on (deploy/batching_parameters.txt), at each concurrency: `--requests` requests of
  one JPEG each from that many client threads (persistent connections), requests/s, p50/p90/p99 latency,
  answers by status, and the mean batch size (the server's model calls and images counters).
Images: the first `--images` MNIST test images from the mirror, encoded as JPEG (quality 95) the way a
client would send them. Every request has a 30 s timeout and each level a 300 s bound.
"""

from __future__ import annotations

import base64
import collections
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import common

PROJECT_ROOT = common.PROJECT_ROOT
BATCHING_FILE = PROJECT_ROOT / "deploy" / "batching_parameters.txt"
LEVEL_SECONDS = 300


def mnist_jpegs(count: int) -> list[bytes]:
    from PIL import Image

    from pipeline.data import datasets

    data = datasets.mnist()
    encoded = []
    for image in data.test_images[:count]:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.ndim == 3 else image).save(buffer, format="JPEG", quality=95)
        encoded.append(buffer.getvalue())
    return encoded


def ceiling(version_dir: Path, images: list[bytes], seconds: float = 10.0) -> dict:
    """`predict`'s images/s in this process: one image per call, and 32 per call."""
    from pipeline.serving import predict

    predictor = predict.Predictor(version_dir)
    result = {}
    for batch in (1, 32):
        predictor(images[:batch], 1)  # first call outside the clock
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            chunk = [images[(done + i) % len(images)] for i in range(batch)]
            predictor(chunk, 1)
            done += batch
        result[batch] = done / (time.perf_counter() - started)
    return result


class Server:
    def __init__(self, version_dir: Path, log_path: Path, *extra: str):
        with socket.socket() as probe:  # a free port on the loopback address
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        command = [sys.executable, "-m", "pipeline", "serve", str(version_dir), "--port", str(self.port)]
        self.log = open(log_path, "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [*command, "--poll-seconds", "0", "--max-queued", "256", *extra],
            cwd=PROJECT_ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        )
        self.started = time.perf_counter()
        self.ready_seconds = None

    def wait_ready(self, name: str, timeout: float = 180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}")
            try:
                if self.call("GET", f"/v1/models/{name}", None, timeout=2)[0] == 200:
                    self.ready_seconds = time.perf_counter() - self.started
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("serve not ready")

    def call(self, method, path, body, timeout=30, connection=None):
        own = connection is None
        connection = connection or http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            if own:
                connection.close()

    def counters(self) -> tuple[int, int]:
        _, text = self.call("GET", "/monitoring/prometheus/metrics", None)
        values = dict(line.split() for line in text.decode().splitlines() if not line.startswith("#"))
        return int(values["pipeline_serve_model_calls_total"]), int(values["pipeline_serve_images_total"])

    def stop(self):
        self.process.terminate()
        self.process.wait(60)
        self.log.close()


def load(server: Server, path: str, bodies: list[bytes], *, requests: int, concurrency: int) -> dict:
    """`requests` POSTs from `concurrency` threads, each on its own keep-alive connection."""
    latencies, statuses, lock = [], collections.Counter(), threading.Lock()
    counter = iter(range(requests))
    deadline = time.monotonic() + LEVEL_SECONDS

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        for index in counter:  # next() on a shared range iterator is atomic under the GIL
            if time.monotonic() > deadline:
                break
            started = time.perf_counter()
            try:
                status, _ = server.call("POST", path, bodies[index % len(bodies)], connection=connection)
            except OSError as error:
                status = type(error).__name__
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                statuses[status] += 1
        connection.close()

    calls_before, images_before = server.counters()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    calls_after, images_after = server.counters()
    ok = statuses.get(200, 0)
    ordered = sorted(latencies)

    def percentile(q):
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    calls = calls_after - calls_before
    return {
        "requests_per_second": ok / wall,
        "p50": percentile(0.50),
        "p90": percentile(0.90),
        "p99": percentile(0.99),
        "statuses": dict(statuses),
        "mean_batch": (images_after - images_before) / calls if calls else float("nan"),
        "sent": len(latencies),
    }


def first_request(version_dir: Path, name: str, body: bytes, log_path: Path) -> tuple[float, float]:
    """(seconds to ready, first request's latency in ms) of a fresh server."""
    server = Server(version_dir, log_path)
    try:
        server.wait_ready(name)
        started = time.perf_counter()
        status, _ = server.call("POST", f"/v1/models/{name}:predict", body)
        assert status == 200, status
        return server.ready_seconds, 1000 * (time.perf_counter() - started)
    finally:
        server.stop()


def main(argv=None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="a trained run (checkpoints/best.keras)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    parser.add_argument("--concurrency", default="1,2,4,8,16", help="comma-separated client thread counts")
    parser.add_argument("--images", type=int, default=256, help="distinct MNIST test images sent")
    parser.add_argument("--batching-parameters", type=Path, default=BATCHING_FILE)
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    if args.quick:
        args.requests, args.concurrency = min(args.requests, 100), "1,8"
    levels = [int(value) for value in args.concurrency.split(",")]

    from pipeline.serving import export

    images = mnist_jpegs(args.images)
    bodies = [json.dumps({"instances": [{"b64": base64.b64encode(data).decode()}]}).encode() for data in images]
    info = common.machine()
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as temporary:
        temporary = Path(temporary)
        cold = export.export_run(args.run_dir, out_dir=temporary / "cold", warmup_images=[])
        warm = export.export_run(args.run_dir, out_dir=temporary / "warm", warmup_images=images[:4])
        name = warm.parent.name
        path = f"/v1/models/{name}:predict"
        best = ceiling(warm, images)
        print(f"in-process predict: {best[1]:.0f} images/s one per call, {best[32]:.0f} images/s 32 per call")
        startup = {
            label: first_request(version, name, bodies[0], temporary / f"first-{label}.log")
            for label, version in (("without warm-up", cold), ("with warm-up", warm))
        }
        for label, (ready, latency) in startup.items():
            print(f"first request {label}: {latency:.1f} ms (ready after {ready:.1f} s)")
        rows, results = [], {}
        for mode, extra in (("off", ()), ("on", ("--batching-parameters", str(args.batching_parameters)))):
            server = Server(warm, temporary / f"serve-{mode}.log", *extra)
            try:
                server.wait_ready(name)
                load(server, path, bodies, requests=50, concurrency=2)  # connections and caches, not counted
                for concurrency in levels:
                    result = load(server, path, bodies, requests=args.requests, concurrency=concurrency)
                    results[(mode, concurrency)] = result
                    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(result["statuses"].items(), key=str))
                    rows.append([mode, concurrency, result["sent"], result["requests_per_second"], result["p50"],
                                 result["p90"], result["p99"], statuses, result["mean_batch"]])  # fmt: skip
                    print(common.markdown_table(HEADERS, rows[-1:]).splitlines()[-1], flush=True)
            finally:
                server.stop()
    table = common.markdown_table(HEADERS, rows)
    notes = summary(results, best, startup, levels)
    common.finish(args, title="Serving over HTTP (pipeline serve)", module="benchmarks.serving", argv=argv,
                  table=table, notes=notes, info=info, printed_extra=notes)  # fmt: skip
    return 0


HEADERS = ["batching", "concurrency", "requests", "requests/s", "p50 ms", "p90 ms", "p99 ms", "answers", "mean batch"]


def summary(results: dict, best: dict, startup: dict, levels: list[int]) -> str:
    lines = [
        f"- In-process `predict` ceiling on the same JPEGs: {best[1]:.0f} images/s one image per call, "
        f"{best[32]:.0f} images/s 32 per call.",
    ]
    for label, (ready, latency) in startup.items():
        lines.append(f"- First request {label}: {latency:.1f} ms (server ready {ready:.1f} s after start).")
    level = 8 if 8 in levels else levels[-1]
    if ("off", level) in results and ("on", level) in results:
        off, on = results[("off", level)], results[("on", level)]
        top = max(result["requests_per_second"] for result in results.values())
        lines.append(
            f"- Concurrency {level}: batching on {on['requests_per_second']:.0f} req/s vs off "
            f"{off['requests_per_second']:.0f} ({on['requests_per_second'] / off['requests_per_second']:.2f}x; goal "
            f">= 2x), p99 {on['p99']:.1f} ms (goal < 100 ms); best HTTP rate {top:.0f} req/s = "
            f"{top / best[32]:.2f} of the 32-per-call ceiling, {top / best[1]:.2f} of the one-per-call one "
            f"(goal >= 0.7)."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
