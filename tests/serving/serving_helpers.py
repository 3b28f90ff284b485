"""What the serving tests share: a tiny exported model, a `serve` subprocess on 127.0.0.1, HTTP calls.

Every wait is bounded in time; servers listen on the loopback address only.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CLASS_NAMES = ["circle", "square", "triangle", "star"]
IMAGE_SIZE = (16, 16)
START_TIMEOUT = 120  # seconds: TensorFlow's import and the SavedModel load on a busy 2-core machine


def encoded(array: np.ndarray, image_format: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format, **({"quality": 95} if image_format == "JPEG" else {}))
    return buffer.getvalue()


def sample_arrays(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(20 + index, 24, 3), dtype=np.uint8) for index in range(count)]


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode("ascii")}


def export_tiny(out_dir: Path, *, version: int, seed: int, warmup_images: list[bytes] | None = None) -> Path:
    """A randomly initialised `tiny` network exported with the project's export code (no training)."""
    import keras

    from models import registry
    from pipeline.data.transform import EvalTransform
    from pipeline.serving import export

    keras.utils.set_random_seed(seed)
    model = registry.build_model("tiny", input_shape=(*IMAGE_SIZE, 3), num_classes=len(CLASS_NAMES))
    return export.export_model(
        model,
        out_dir=out_dir,
        model_name="tiny",
        class_names=CLASS_NAMES,
        transform=EvalTransform(image_size=IMAGE_SIZE, channels=3),
        top_k=3,
        version=version,
        warmup_images=warmup_images,
    )


@functools.cache
def predictor(version_dir):
    from pipeline.serving import predict

    return predict.Predictor(version_dir)


def in_process(version_dir, encoded: list[bytes]) -> np.ndarray:
    """`predict`'s answer for these files (its Predictor on the same SavedModel, every class ranked), as
    probabilities [images, classes] in class order."""
    names, scores = predictor(version_dir)(encoded, top_k=len(CLASS_NAMES))
    probabilities = np.zeros((len(encoded), len(CLASS_NAMES)))
    for row, (ranked, values) in enumerate(zip(names, scores)):
        for name, value in zip(ranked, values):
            probabilities[row, CLASS_NAMES.index(name)] = value
    return probabilities


async def asgi_request(app, method: str, path: str, body: bytes = b"") -> tuple[int, dict, bytes]:
    """One HTTP request to an ASGI application in this process (no socket): (status, headers, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8501),
    }
    delivered = False

    async def receive():
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    messages = []

    async def send(message):
        messages.append(message)

    await app(scope, receive, send)
    start = messages[0]
    return start["status"], dict(start["headers"]), b"".join(message.get("body", b"") for message in messages[1:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """`python -m pipeline serve ...` as a subprocess; stderr goes to a file the tests can read."""

    def __init__(self, export_path: Path, log_path: Path, *extra: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [sys.executable, "-m", "pipeline", "serve", str(export_path), "--port", str(self.port), *extra]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self._log = open(log_path, "w")  # noqa: SIM115  (closed in stop)
        self.process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, name: str = "tiny") -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                status, _ = self.get(f"/v1/models/{name}", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"serve not ready after {START_TIMEOUT} s:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def request(self, method: str, path: str, body: bytes | None = None, timeout: float = 60):
        request = urllib.request.Request(self.base + path, data=body, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def get(self, path: str, timeout: float = 60):
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, document, timeout: float = 60):
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        return self.request("POST", path, body, timeout=timeout)

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        return self.process.returncode
