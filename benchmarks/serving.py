"""`python -m pipeline serve` under a bounded load on 127.0.0.1: batching off vs on, against `predict`'s ceiling.

    .venv/bin/python -m benchmarks.serving --run-dir runs/mnist_lenet/<time> [--requests 2000]
        [--tensorflow-threads INTRA,INTER]

Takes a trained run, exports its best checkpoint twice into a temporary folder (with and without TF
Serving's warm-up file; the run is not changed), and measures:
- the in-process ceiling: `predict`'s Predictor on the same JPEGs, one image per call and 32 per call;
- first-request latency after the server reports ready, with and without warm-up;
- for batching off, on (deploy/batching_parameters.txt) and on with batch_timeout_micros 0 (TF Serving's
  advice for CPUs: no waiting, batches form while the batch threads are busy), at each concurrency:
  `--requests` V1 requests of one JPEG each, requests/s, p50/p90/p99 latency, answers by status, the mean
  batch size (the server's model-call and image counters), and where the CPU went: the server's event-loop
  thread (HTTP, JSON, base64), its other threads (batching, TensorFlow), and the load client.
The load client is benchmarks/http_load.py, a separate process (asyncio on uvloop, keep-alive connections,
responses read by Content-Length only), so that it does not share the benchmark's GIL; it still shares the
two cores with the server. `--tensorflow-threads` sizes TensorFlow's pools in the server and in the ceiling
alike. Images: the first `--images` MNIST test images from the mirror, encoded as JPEG (quality 95) the way a
client would send them. Every request has a 30 s timeout and each level a 300 s bound.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
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
    """`predict`'s images/s in this process, one image per call and 32 per call ({1: .., 32: ..}), and its
    CPU ms an image ({"cpu1": .., "cpu32": ..})."""
    from pipeline.serving import predict

    predictor = predict.Predictor(version_dir)
    result = {}
    for batch in (1, 32):
        predictor(images[:batch], 1)  # first call outside the clock
        done, started, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - started < seconds:
            chunk = [images[(done + i) % len(images)] for i in range(batch)]
            predictor(chunk, 1)
            done += batch
        result[batch] = done / (time.perf_counter() - started)
        result[f"cpu{batch}"] = 1000 * (time.process_time() - cpu) / done  # ms of CPU an image
    return result


def thread_cpu(pid: int) -> tuple[float, float]:
    """(main thread, other threads) CPU seconds of a process so far (Linux /proc)."""
    main = other = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{task}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        seconds = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        if task == str(pid):
            main += seconds
        else:
            other += seconds
    return main, other


class Server:
    def __init__(self, version_dir: Path, log_path: Path, *extra: str):
        extra = (*extra, *SERVER_ARGUMENTS)
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
        values = dict(line.rsplit(" ", 1) for line in text.decode().splitlines() if line and not line.startswith("#"))
        return int(float(values["pipeline_serve_model_calls_total"])), int(float(values["pipeline_serve_images_total"]))

    def stop(self):
        self.process.terminate()
        self.process.wait(60)
        self.log.close()


def load(server: Server, path: str, bodies_file: Path, *, requests: int, concurrency: int) -> dict:
    """`requests` POSTs over `concurrency` keep-alive connections from benchmarks/http_load.py."""
    calls_before, images_before = server.counters()
    cpu_before = thread_cpu(server.process.pid)
    command = [sys.executable, "-m", "benchmarks.http_load", "--port", str(server.port), "--path", path,
               "--bodies", str(bodies_file), "--requests", str(requests), "--concurrency", str(concurrency),
               "--max-seconds", str(LEVEL_SECONDS)]  # fmt: skip
    finished = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, check=True, timeout=LEVEL_SECONDS + 60)
    cpu_after = thread_cpu(server.process.pid)
    calls_after, images_after = server.counters()
    result = json.loads(finished.stdout)
    statuses = {int(key) if key.isdigit() else key: value for key, value in result["statuses"].items()}
    ordered = sorted(result["latencies"])

    def percentile(q):
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    calls, sent = calls_after - calls_before, len(ordered)
    per_request = 1000 / max(sent, 1)  # seconds -> ms per request
    return {
        "requests_per_second": statuses.get(200, 0) / result["wall"],
        "p50": percentile(0.50),
        "p90": percentile(0.90),
        "p99": percentile(0.99),
        "statuses": statuses,
        "mean_batch": (images_after - images_before) / calls if calls else float("nan"),
        "sent": sent,
        "cpu_loop": (cpu_after[0] - cpu_before[0]) * per_request,
        "cpu_other": (cpu_after[1] - cpu_before[1]) * per_request,
        "cpu_client": result["client_cpu"] * per_request,
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


SERVER_ARGUMENTS: tuple[str, ...] = ()  # --tensorflow-threads, passed to every server started


def main(argv=None) -> int:
    global SERVER_ARGUMENTS
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="a trained run (checkpoints/best.keras)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    parser.add_argument("--concurrency", default="1,2,4,8,16", help="comma-separated client connection counts")
    parser.add_argument("--images", type=int, default=256, help="distinct MNIST test images sent")
    parser.add_argument("--batching-parameters", type=Path, default=BATCHING_FILE)
    parser.add_argument(
        "--tensorflow-threads", default="0,0", help="INTRA,INTER op threads of TensorFlow (0: its default)"
    )
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    if args.quick:
        args.requests, args.concurrency = min(args.requests, 100), "1,8"
    levels = [int(value) for value in args.concurrency.split(",")]
    intra, inter = (int(value) for value in args.tensorflow_threads.split(","))
    SERVER_ARGUMENTS = (
        "--tensorflow-intra-op-parallelism",
        str(intra),
        "--tensorflow-inter-op-parallelism",
        str(inter),
    )

    import tensorflow as tf

    if intra:  # the ceiling under the same thread pools as the server, set before TensorFlow's first op
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    from pipeline.serving import batching, export

    images = mnist_jpegs(args.images)
    bodies = [json.dumps({"instances": [{"b64": base64.b64encode(data).decode()}]}).encode() for data in images]
    info = common.machine()
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as temporary:
        temporary = Path(temporary)
        bodies_file = temporary / "bodies.txt"
        bodies_file.write_bytes(b"\n".join(bodies) + b"\n")
        no_wait = temporary / "batching_parameters_timeout_0.txt"
        parameters = batching.read_batching_parameters(args.batching_parameters)
        no_wait.write_text(
            f"max_batch_size {{ value: {parameters.max_batch_size} }}\nbatch_timeout_micros {{ value: 0 }}\n"
            f"max_enqueued_batches {{ value: {parameters.max_enqueued_batches} }}\n"
            f"num_batch_threads {{ value: {parameters.num_batch_threads} }}\n"
        )
        cold = export.export_run(args.run_dir, out_dir=temporary / "cold", warmup_images=[])
        warm = export.export_run(args.run_dir, out_dir=temporary / "warm", warmup_images=images[:4])
        name = warm.parent.name
        path = f"/v1/models/{name}:predict"
        best = ceiling(warm, images, seconds=2.0 if args.quick else 10.0)
        print(f"in-process predict: {best[1]:.0f} images/s one per call, {best[32]:.0f} images/s 32 per call")
        startup = {
            label: first_request(version, name, bodies[0], temporary / f"first-{label}.log")
            for label, version in (("without warm-up", cold), ("with warm-up", warm))
        }
        for label, (ready, latency) in startup.items():
            print(f"first request {label}: {latency:.1f} ms (ready after {ready:.1f} s)")
        rows, cpu_rows, results = [], [], {}
        modes = (
            ("off", ()),
            ("on", ("--batching-parameters", str(args.batching_parameters))),
            ("on, timeout 0", ("--batching-parameters", str(no_wait))),
        )
        for mode, extra in modes:
            server = Server(warm, temporary / f"serve-{len(rows)}.log", *extra)
            try:
                server.wait_ready(name)
                load(server, path, bodies_file, requests=50, concurrency=2)  # connections and caches, not counted
                for concurrency in levels:
                    result = load(server, path, bodies_file, requests=args.requests, concurrency=concurrency)
                    results[(mode, concurrency)] = result
                    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(result["statuses"].items(), key=str))
                    rows.append([mode, concurrency, result["sent"], result["requests_per_second"], result["p50"],
                                 result["p90"], result["p99"], statuses, result["mean_batch"]])  # fmt: skip
                    cpu = (result["cpu_loop"], result["cpu_other"], result["cpu_loop"] + result["cpu_other"],
                           result["cpu_client"])  # fmt: skip
                    cpu_rows.append([mode, concurrency, *(f"{value:.2f}" for value in cpu)])
                    print(common.markdown_table(HEADERS, rows[-1:]).splitlines()[-1], flush=True)
            finally:
                server.stop()
    table = common.markdown_table(HEADERS, rows)
    notes = summary(results, best, startup, levels, intra=intra, inter=inter)
    notes += "\n\nCPU per request (ms), from /proc: the server's event-loop thread (HTTP, JSON, base64, response), its "
    notes += "other threads (batching, TensorFlow's call and pools), and the load client:\n\n"
    notes += common.markdown_table(CPU_HEADERS, cpu_rows)
    common.finish(args, title="Serving over HTTP (pipeline serve)", module="benchmarks.serving", argv=argv,
                  table=table, notes=notes, info=info, printed_extra=notes)  # fmt: skip
    return 0


HEADERS = ["batching", "concurrency", "requests", "requests/s", "p50 ms", "p90 ms", "p99 ms", "answers", "mean batch"]
CPU_HEADERS = ["batching", "concurrency", "event loop", "other threads", "server", "client"]


def summary(results: dict, best: dict, startup: dict, levels: list[int], *, intra: int, inter: int) -> str:
    threads = f"intra {intra or 'default'}, inter {inter or 'default'}"
    lines = [
        f"- In-process `predict` ceiling on the same JPEGs (TensorFlow threads: {threads}, as in the server): "
        f"{best[1]:.0f} images/s one image per call ({best['cpu1']:.2f} ms CPU an image), {best[32]:.0f} images/s "
        f"32 per call ({best['cpu32']:.2f} ms CPU an image).",
    ]
    for label, (ready, latency) in startup.items():
        lines.append(f"- First request {label}: {latency:.1f} ms (server ready {ready:.1f} s after start).")
    level = 8 if 8 in levels else levels[-1]
    off = results.get(("off", level))
    top = max(result["requests_per_second"] for result in results.values())
    for mode in ("on", "on, timeout 0"):
        on = results.get((mode, level))
        if off and on:
            lines.append(
                f"- Concurrency {level}, batching {mode}: {on['requests_per_second']:.0f} req/s vs off "
                f"{off['requests_per_second']:.0f} ({on['requests_per_second'] / off['requests_per_second']:.2f}x; "
                f"goal >= 2x), p99 {on['p99']:.1f} ms (goal < 100 ms)."
            )
    lines.append(
        f"- Best HTTP rate {top:.0f} req/s = {top / best[32]:.2f} of the 32-per-call ceiling, {top / best[1]:.2f} "
        f"of the one-per-call one (goal >= 0.7)."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
