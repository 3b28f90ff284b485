"""The Open Inference Protocol (V2) routes and the Prometheus metrics of `serve`, in-process.

The ASGI application `serve` hands to uvicorn, driven here without a socket (serving_helpers.asgi_request),
over a tiny random network exported with the project's export code; the HTTP side (uvicorn, SIGTERM) is
covered by test_server.py's subprocess. Each test builds its own Server (its own batcher and metrics) on
one loaded model.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re

import numpy as np
import pytest
import serving_helpers as helpers

from pipeline.serving import batching, model_store, server

MAX_BATCH = 8
MAX_BODY = 200_000


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-v2") / "export"
    helpers.export_tiny(root, version=1, seed=1)
    return root / "tiny"


@pytest.fixture(scope="module")
def store(export_dir):
    return model_store.ModelStore(export_dir, poll_seconds=0, log=lambda message: None)


@pytest.fixture()
def serving(store):
    """(server, app) with batching: up to MAX_BATCH images, a batch waits 300 ms for more."""
    parameters = batching.BatchingParameters(max_batch_size=MAX_BATCH, batch_timeout_micros=300_000)
    instance = server.Server(
        store, batching=parameters, max_batch_size=MAX_BATCH, max_body_bytes=MAX_BODY, threads=1, max_queued=8
    )
    try:
        yield instance, instance.app()
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def images():
    arrays = helpers.sample_arrays(3, seed=9)
    return {
        "arrays": arrays,
        "png": [helpers.encoded(a, "PNG") for a in arrays],
        "jpeg": [helpers.encoded(a, "JPEG") for a in arrays],
    }


def call(app, method: str, path: str, document=None):
    body = b"" if document is None else document if isinstance(document, bytes) else json.dumps(document).encode()
    status, headers, answer = asyncio.run(helpers.asgi_request(app, method, path, body))
    return status, (json.loads(answer) if headers[b"content-type"].startswith(b"application/json") else answer)


def bytes_input(encoded: list[bytes]) -> dict:
    data = [base64.b64encode(item).decode("ascii") for item in encoded]
    return {"name": "image_bytes", "shape": [len(data)], "datatype": "BYTES", "data": data}


def test_health_server_and_model_metadata(serving):
    _, app = serving
    assert call(app, "GET", "/v2/health/live") == (200, {"live": True})
    assert call(app, "GET", "/v2/health/ready") == (200, {"ready": True})
    assert call(app, "GET", "/v2") == (200, {"name": "pipeline-serve", "version": "2", "extensions": []})
    k, classes = 3, len(helpers.CLASS_NAMES)
    expected = {
        "name": "tiny",
        "versions": ["1"],
        "platform": "tensorflow_savedmodel",
        "inputs": [
            {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]},
            {"name": "images", "datatype": "UINT8", "shape": [-1, -1, -1, -1]},
        ],
        "outputs": [
            {"name": "classes", "datatype": "BYTES", "shape": [-1, k]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
            {"name": "scores", "datatype": "FP32", "shape": [-1, k]},
        ],
    }
    status, body = call(app, "GET", "/v2/models/tiny")
    assert status == 200
    assert {**body, "inputs": sorted(body["inputs"], key=str), "outputs": sorted(body["outputs"], key=str)} == {
        **expected,
        "inputs": sorted(expected["inputs"], key=str),
        "outputs": sorted(expected["outputs"], key=str),
    }
    assert call(app, "GET", "/v2/models/tiny/versions/1")[1] == body
    assert call(app, "GET", "/v2/models/tiny/ready") == (200, {"name": "tiny", "ready": True})
    assert call(app, "GET", "/v2/models/tiny/versions/1/ready") == (200, {"name": "tiny", "ready": True})
    for path in ("/v2/models/other", "/v2/models/tiny/versions/2", "/v2/models/other/ready"):
        status, body = call(app, "GET", path)
        assert status == 404 and "Servable not found" in body["error"], (path, body)


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_infer_bytes_equals_predict(serving, export_dir, images, image_format):
    _, app = serving
    encoded = images[image_format]
    expected = helpers.in_process(export_dir / "1", encoded)
    status, body = call(app, "POST", "/v2/models/tiny/infer", {"id": "req-7", "inputs": [bytes_input(encoded)]})
    assert status == 200, body
    assert (body["model_name"], body["model_version"], body["id"]) == ("tiny", "1", "req-7")
    outputs = {output["name"]: output for output in body["outputs"]}
    assert {name: (o["datatype"], o["shape"]) for name, o in outputs.items()} == {
        "probabilities": ("FP32", [3, 4]),
        "classes": ("BYTES", [3, 3]),
        "scores": ("FP32", [3, 3]),
    }
    np.testing.assert_allclose(np.reshape(outputs["probabilities"]["data"], (3, 4)), expected, atol=1e-5)
    order = np.argsort(-expected, axis=1, kind="stable")[:, :3]
    assert outputs["classes"]["data"] == [helpers.CLASS_NAMES[i] for i in order.reshape(-1)]  # row-major, flat
    # Only the outputs asked for, in that order; a version in the path; a new id when the body has none.
    document = {"inputs": [bytes_input(encoded[:1])], "outputs": [{"name": "scores"}, {"name": "probabilities"}]}
    status, body = call(app, "POST", "/v2/models/tiny/versions/1/infer", document)
    assert status == 200 and [output["name"] for output in body["outputs"]] == ["scores", "probabilities"]
    assert re.fullmatch(r"[0-9a-f-]{36}", body["id"])
    np.testing.assert_allclose(body["outputs"][1]["data"], expected[0], atol=1e-5)


def test_infer_uint8_images_runs_serve_images(serving, export_dir, images):
    _, app = serving
    array = images["arrays"][0]
    expected = helpers.in_process(export_dir / "1", [images["png"][0]])  # PNG: the same pixels
    document = {
        "inputs": [
            {"name": "images", "shape": [1, *array.shape], "datatype": "UINT8", "data": array.reshape(-1).tolist()}
        ]
    }
    status, body = call(app, "POST", "/v2/models/tiny/infer", document)
    assert status == 200, body
    probabilities = next(output for output in body["outputs"] if output["name"] == "probabilities")
    np.testing.assert_allclose(probabilities["data"], expected[0], atol=1e-5)
    document["inputs"][0]["data"] = [array.tolist()]  # nested lists read the same
    assert call(app, "POST", "/v2/models/tiny/infer", document)[1]["outputs"] == body["outputs"]


def bad_requests(images):
    png, jpeg = images["png"][0], images["jpeg"][0]
    good = bytes_input([png])
    return [
        ("malformed JSON", b'{"inputs": [', 400, "JSON Parse error"),
        ("no inputs", {"id": "x"}, 400, "'inputs' must be a list of one input object"),
        ("two inputs", {"inputs": [good, good]}, 400, "received a list of 2"),
        ("unknown key", {"inputs": [good], "instances": []}, 400, "unknown key 'instances' in the body"),
        ("missing data", {"inputs": [{k: v for k, v in good.items() if k != "data"}]}, 400, "inputs[0]: missing 'data'"),
        ("unknown input", {"inputs": [{**good, "name": "image"}]}, 400, "unknown input 'image'; the model's inputs: image_bytes, images"),
        ("wrong datatype", {"inputs": [{**good, "datatype": "UINT8"}]}, 400, "has datatype BYTES; received 'UINT8'"),
        ("shape vs data", {"inputs": [{**good, "shape": [2]}]}, 400, "must be a list of 2 base64 strings"),
        ("bad base64", {"inputs": [bytes_input([png]) | {"data": [good["data"][0], "not base64!"], "shape": [2]}]}, 400, "input 'image_bytes' element 1: Unable to base64 decode"),
        ("not an image", {"inputs": [bytes_input([b"hello, world"])]}, 400, "element 0: not an image"),
        ("truncated JPEG among good ones", {"inputs": [bytes_input([png, png, jpeg[:200]])]}, 400, "input 'image_bytes' element 2: corrupt or truncated JPEG"),
        ("empty batch", {"inputs": [{**good, "shape": [0], "data": []}]}, 400, "the batch is empty"),
        ("batch over the limit", {"inputs": [bytes_input([png] * (MAX_BATCH + 1))]}, 400, f"Task size {MAX_BATCH + 1} is larger than maximum input batch size {MAX_BATCH}"),
        ("uint8 size", {"inputs": [{"name": "images", "shape": [1, 2, 2, 3], "datatype": "UINT8", "data": [1, 2, 3]}]}, 400, "must hold 12 integers"),
        ("uint8 range", {"inputs": [{"name": "images", "shape": [1, 1, 1, 3], "datatype": "UINT8", "data": [1, 2, 300]}]}, 400, "must be in 0..255"),
        ("unknown output", {"inputs": [good], "outputs": [{"name": "logits"}]}, 400, "unknown output 'logits'"),
        ("binary extension", {"inputs": [{**good, "parameters": {"binary_data_size": 10}}]}, 400, "binary tensor data extension is not supported"),
        ("body over the limit", {"inputs": [{**good, "data": ["A" * MAX_BODY]}]}, 413, f"over the limit of {MAX_BODY} bytes"),
    ]  # fmt: skip


def test_bad_requests_get_a_4xx_naming_the_fault(serving, images):
    _, app = serving
    for label, document, status, fragment in bad_requests(images):
        answer, body = call(app, "POST", "/v2/models/tiny/infer", document)
        assert (answer, set(body)) == (status, {"error"}), (label, answer, body)
        assert fragment in body["error"], (label, body["error"])
    document = {"inputs": [bytes_input(images["png"][:1])]}
    status, body = call(app, "POST", "/v2/models/other/infer", document)
    assert status == 404 and "Latest(other)" in body["error"]
    status, body = call(app, "POST", "/v2/models/tiny/versions/3/infer", document)
    assert status == 404 and "Specific(tiny, 3)" in body["error"]
    assert call(app, "POST", "/v2/models/tiny/infer", document)[0] == 200  # still serving


def test_v1_and_v2_requests_share_a_batch_and_are_counted(serving, images):
    instance, app = serving
    png = images["png"]

    async def both():
        v1 = {"instances": [helpers.b64(png[0])]}
        v2 = {"inputs": [bytes_input(png[1:3])]}
        return await asyncio.gather(
            helpers.asgi_request(app, "POST", "/v1/models/tiny:predict", json.dumps(v1).encode()),
            helpers.asgi_request(app, "POST", "/v2/models/tiny/infer", json.dumps(v2).encode()),
        )

    (status_v1, _, _), (status_v2, _, _) = asyncio.run(both())
    assert (status_v1, status_v2) == (200, 200)
    assert (instance.metrics.model_calls, instance.metrics.images) == (1, 3)  # one model call for both
    assert call(app, "POST", "/v2/models/tiny/infer", b"{")[0] == 400
    assert call(app, "GET", "/v1/models/tiny")[0] == 200
    assert call(app, "GET", "/v1/nothing")[0] == 404

    status, text = call(app, "GET", "/metrics")
    assert status == 200
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.decode().splitlines()
        if line and not line.startswith("#")
    }
    assert samples['pipeline_serve_requests_total{protocol="v1",status="200"}'] == 2  # predict and status
    assert samples['pipeline_serve_requests_total{protocol="v2",status="200"}'] == 1
    assert samples['pipeline_serve_requests_total{protocol="v2",status="400"}'] == 1
    assert samples['pipeline_serve_requests_total{protocol="v1",status="404"}'] == 1
    # Latency: the predict/infer requests only (the refused one too), each in some bucket up to +Inf.
    assert samples['pipeline_serve_request_duration_seconds_count{protocol="v2"}'] == 2
    assert samples['pipeline_serve_request_duration_seconds_bucket{le="+Inf",protocol="v1"}'] == 1
    assert samples["pipeline_serve_batch_size_count"] == 1 and samples["pipeline_serve_batch_size_sum"] == 3
    assert samples['pipeline_serve_batch_size_bucket{le="2.0"}'] == 0
    assert samples['pipeline_serve_batch_size_bucket{le="4.0"}'] == 1
    assert samples["pipeline_serve_model_calls_total"] == 1 and samples["pipeline_serve_images_total"] == 3
    status, same = call(app, "GET", "/monitoring/prometheus/metrics")  # TF Serving's path: the same metrics
    assert status == 200 and b'pipeline_serve_requests_total{protocol="other",status="200"} 1.0' in same
