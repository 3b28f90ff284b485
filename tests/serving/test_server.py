"""`python -m pipeline serve` over HTTP, as a TF Serving REST client sees it.

One server process for the module (its start imports TensorFlow): a tiny random network exported with the
project's export code, batching on (max_batch_size 8), a 200 kB body limit and a 0.5 s version poll.
The test that adds version 2 runs last. The SIGTERM / full-queue test starts its own server (slow).
"""

from __future__ import annotations

import base64
import json
import threading
import time

import numpy as np
import pytest
import serving_helpers as helpers

from pipeline import cli

MAX_BATCH = 8
MAX_BODY = 200_000


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    arrays = helpers.sample_arrays(2, seed=5)
    warmup = [helpers.encoded(arrays[0], "PNG"), helpers.encoded(arrays[1], "JPEG")]
    root = tmp_path_factory.mktemp("serve") / "export"
    helpers.export_tiny(root, version=1, seed=1, warmup_images=warmup)
    return root / "tiny"


@pytest.fixture(scope="module")
def server(export_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("server")
    parameters = folder / "batching_parameters.txt"
    parameters.write_text(
        f"max_batch_size {{ value: {MAX_BATCH} }}\nbatch_timeout_micros {{ value: 2000 }}\n"
        "max_enqueued_batches { value: 16 }\nnum_batch_threads { value: 1 }\npad_variable_length_inputs: false\n"
    )
    process = helpers.ServerProcess(
        export_dir,
        folder / "serve.log",
        "--batching-parameters",
        str(parameters),
        "--max-body-bytes",
        str(MAX_BODY),
        "--poll-seconds",
        "0.5",
    )
    try:
        process.wait_ready()
        yield process
    finally:
        assert process.stop() == 0, process.log()


@pytest.fixture(scope="module")
def images():
    arrays = helpers.sample_arrays(3, seed=9)
    return {"png": [helpers.encoded(a, "PNG") for a in arrays], "jpeg": [helpers.encoded(a, "JPEG") for a in arrays]}


in_process = helpers.in_process


# --------------------------------------------------------------------------------------------------
# Status, metadata, warm-up
# --------------------------------------------------------------------------------------------------


def test_status_metadata_and_warmup(server, export_dir):
    status, body = server.get("/v1/models/tiny")
    assert status == 200
    assert body == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert server.get("/v1/models/tiny/versions/1")[0] == 200

    status, body = server.get("/v1/models/tiny/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "tiny", "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    default = signatures["serving_default"]
    assert default["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert default["method_name"] == "tensorflow/serving/predict"
    assert set(default["outputs"]) == {"probabilities", "classes", "scores"}
    assert default["outputs"]["probabilities"]["tensor_shape"]["dim"][1]["size"] == str(len(helpers.CLASS_NAMES))
    assert signatures["serve_images"]["inputs"]["images"]["dtype"] == "DT_UINT8"
    # Two images: one request each, then both as a batch.
    assert "warm-up: 3 requests replayed" in server.log()


def test_warmup_file_parses_with_the_official_protos(export_dir):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = export_dir / "1" / "assets.extra" / "tf_serving_warmup_requests"
    records = [record.numpy() for record in tf.data.TFRecordDataset(str(path))]
    logs = [prediction_log_pb2.PredictionLog.FromString(record) for record in records]
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log"] * 3
    request = logs[2].predict_log.request
    assert request.model_spec.name == "tiny" and request.model_spec.signature_name == "serving_default"
    images = tf.make_ndarray(request.inputs["image_bytes"])
    assert images.shape == (2,) and images[0].startswith(b"\x89PNG") and images[1].startswith(b"\xff\xd8")


# --------------------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_row_and_columnar_predictions_equal_predict(server, export_dir, images, image_format):
    encoded = images[image_format]
    expected = in_process(export_dir / "1", encoded)
    forms = [
        ({"instances": [helpers.b64(data) for data in encoded]}, "predictions"),
        (
            {"signature_name": "serving_default", "instances": [{"image_bytes": helpers.b64(d)} for d in encoded]},
            "predictions",
        ),
        ({"inputs": [helpers.b64(data) for data in encoded]}, "outputs"),
        ({"inputs": {"image_bytes": [helpers.b64(data) for data in encoded]}}, "outputs"),
    ]
    for document, key in forms:
        status, body = server.post("/v1/models/tiny:predict", document)
        assert status == 200, body
        if key == "predictions":
            assert [set(row) for row in body["predictions"]] == [{"probabilities", "classes", "scores"}] * 3
            probabilities = np.array([row["probabilities"] for row in body["predictions"]])
            classes = [row["classes"] for row in body["predictions"]]
            scores = np.array([row["scores"] for row in body["predictions"]])
        else:
            probabilities = np.array(body["outputs"]["probabilities"])
            classes, scores = body["outputs"]["classes"], np.array(body["outputs"]["scores"])
        np.testing.assert_allclose(probabilities, expected, atol=1e-5)
        order = np.argsort(-expected, axis=1, kind="stable")[:, :3]
        assert classes == [[helpers.CLASS_NAMES[i] for i in row] for row in order]
        np.testing.assert_allclose(scores, np.take_along_axis(expected, order, axis=1), atol=1e-5)
    status, body = server.post("/v1/models/tiny/versions/1:predict", forms[0][0])
    assert status == 200 and len(body["predictions"]) == 3


def test_serve_images_signature(server, export_dir):
    array = helpers.sample_arrays(1, seed=3)[0]
    expected = in_process(export_dir / "1", [helpers.encoded(array, "PNG")])  # PNG: the same pixels
    status, body = server.post(
        "/v1/models/tiny:predict", {"signature_name": "serve_images", "instances": [array.tolist()]}
    )
    assert status == 200, body
    np.testing.assert_allclose(body["predictions"][0]["probabilities"], expected[0], atol=1e-5)


def test_concurrent_requests_are_answered_each_with_its_own_rows(server, export_dir, images):
    encoded = images["png"] + images["jpeg"]
    expected = in_process(export_dir / "1", encoded)
    results = [None] * len(encoded)

    def one(index):
        results[index] = server.post("/v1/models/tiny:predict", {"instances": [helpers.b64(encoded[index])]})

    threads = [threading.Thread(target=one, args=(index,)) for index in range(len(encoded))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for index, (status, body) in enumerate(results):
        assert status == 200
        np.testing.assert_allclose(body["predictions"][0]["probabilities"], expected[index], atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Bad requests: a 4xx {"error": ...} naming what was wrong, and the server keeps serving
# --------------------------------------------------------------------------------------------------


def bad_requests(images):
    png, jpeg = images["png"][0], images["jpeg"][0]
    url_safe = base64.urlsafe_b64encode(b"\xfb\xff" + png).decode()
    assert "-" in url_safe or "_" in url_safe
    return [
        ("malformed JSON", b'{"instances": [', 400, "JSON Parse error"),
        ("both forms", {"instances": [helpers.b64(png)], "inputs": [helpers.b64(png)]}, 400, "both 'instances'"),
        ("neither form", {"signature_name": "serving_default"}, 400, "missing 'instances'"),
        ("not base64", {"instances": [{"b64": "not base64!"}]}, 400, "instance 0: Unable to base64 decode"),
        ("URL-safe base64", {"instances": [helpers.b64(png), {"b64": url_safe}]}, 400, "instance 1: Unable to base64 decode (URL-safe"),
        ("bytes not an image", {"instances": [helpers.b64(b"hello, world")]}, 400, "instance 0: not an image"),
        ("TIFF", {"instances": [helpers.b64(b"II*\x00" + bytes(60))]}, 400, "instance 0: TIFF is not supported"),
        ("truncated JPEG among good ones", {"instances": [helpers.b64(png), helpers.b64(png), helpers.b64(jpeg[:200])]}, 400, "instance 2: corrupt or truncated JPEG"),
        ("unknown signature", {"signature_name": "serving_defualt", "instances": [helpers.b64(png)]}, 400, "'serving_defualt' not found"),
        ("wrong input name", {"instances": [{"image": helpers.b64(png)}]}, 400, "one input is 'image_bytes'"),
        ("empty batch", {"instances": []}, 400, "'instances' is empty"),
        ("batch over the limit", {"instances": [helpers.b64(png)] * (MAX_BATCH + 1)}, 400, f"Task size {MAX_BATCH + 1} is larger than maximum input batch size {MAX_BATCH}"),
        ("body over the limit", {"instances": [{"b64": "A" * MAX_BODY}]}, 413, f"over the limit of {MAX_BODY} bytes"),
        ("ragged images", {"signature_name": "serve_images", "instances": [[[[1, 2, 3]]], [[[1, 2, 3], [4, 5, 6]]]]}, 400, "instance 1: shape [1, 2, 3] differs"),
        ("not a JSON object", b"[1, 2]", 400, "must be a JSON object"),
    ]  # fmt: skip


def test_bad_requests_get_a_4xx_naming_the_fault(server, images):
    for label, document, status, fragment in bad_requests(images):
        answer, body = server.post("/v1/models/tiny:predict", document)
        assert (answer, set(body)) == (status, {"error"}), (label, answer, body)
        assert fragment in body["error"], (label, body["error"])
    # Still serving after all of them.
    assert server.post("/v1/models/tiny:predict", {"instances": [helpers.b64(images["png"][0])]})[0] == 200


def test_unknown_model_version_and_path_are_404(server, images):
    document = {"instances": [helpers.b64(images["png"][0])]}
    status, body = server.post("/v1/models/other:predict", document)
    assert status == 404 and "Servable not found for request: Latest(other)" in body["error"]
    status, body = server.post("/v1/models/tiny/versions/7:predict", document)
    assert status == 404 and "Specific(tiny, 7)" in body["error"]
    status, body = server.get("/v1/models/tiny/versions/7")
    assert status == 404 and "version 7" in body["error"]
    status, body = server.get("/v1/nothing/here")
    assert status == 404 and "/v1/nothing/here" in body["error"]


def test_serve_refuses_bad_arguments_before_loading(server, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:  # argparse: before anything is imported or loaded
        cli.main(["serve", str(tmp_path), "--port", "70000"])
    assert exited.value.code == 2
    assert "argument --port: must be 0..65535; received 70000" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", str(tmp_path), "--tensorflow-intra-op-parallelism", "-1"])
    assert exited.value.code == 2
    assert "argument --tensorflow-intra-op-parallelism: must be at least 0; received -1" in capsys.readouterr().err
    assert cli.main(["serve", str(tmp_path), "--port", str(server.port)]) == 2
    assert f"--port {server.port}: cannot listen there (Address already in use)" in capsys.readouterr().err
    assert cli.main(["serve", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert "no such directory" in capsys.readouterr().err
    bad = tmp_path / "batching_parameters.txt"
    bad.write_text("max_batch_size { value: 8 }\nbatch_timeout_micro { value: 10 }\n")
    assert cli.main(["serve", str(tmp_path), "--batching-parameters", str(bad)]) == 2
    assert "batching_parameters.txt:2: unknown field 'batch_timeout_micro' (did you mean 'batch_timeout_micros'?)" in (
        capsys.readouterr().err
    )


# --------------------------------------------------------------------------------------------------
# A new version, without a restart (last: it changes what the module's server serves)
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow  # 7-30 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_new_version_is_served_without_restart(server, export_dir, images):
    helpers.export_tiny(export_dir.parent, version=2, seed=2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, body = server.get("/v1/models/tiny")
        if body["model_version_status"][0]["version"] == "2":
            break
        time.sleep(0.2)
    assert [(entry["version"], entry["state"]) for entry in body["model_version_status"]] == [
        ("2", "AVAILABLE"),
        ("1", "END"),
    ]
    encoded = images["png"]
    expected = in_process(export_dir / "2", encoded)
    assert not np.allclose(expected, in_process(export_dir / "1", encoded), atol=1e-3)  # another network
    for path in ("/v1/models/tiny:predict", "/v1/models/tiny/versions/2:predict"):
        status, body = server.post(path, {"instances": [helpers.b64(data) for data in encoded]})
        assert status == 200
        np.testing.assert_allclose([row["probabilities"] for row in body["predictions"]], expected, atol=1e-5)
    assert server.post("/v1/models/tiny/versions/1:predict", {"instances": [helpers.b64(encoded[0])]})[0] == 404
    assert server.get("/v1/models/tiny/metadata")[1]["model_spec"]["version"] == "2"


# --------------------------------------------------------------------------------------------------
# A full queue and SIGTERM with a request in flight (a second server: slow)
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_full_queue_is_503_and_sigterm_lets_the_request_in_flight_finish(export_dir, images, tmp_path):
    # One batch of up to 4 images may wait, for 3 s: a 2-image request waits there while the others arrive.
    parameters = tmp_path / "batching_parameters.txt"
    parameters.write_text(
        "max_batch_size { value: 4 }\nbatch_timeout_micros { value: 3000000 }\nmax_enqueued_batches { value: 1 }\n"
    )
    process = helpers.ServerProcess(export_dir / "1", tmp_path / "serve.log", "--batching-parameters", str(parameters))
    try:
        process.wait_ready()
        encoded = images["png"]
        in_flight = {}
        waiting = threading.Thread(
            target=lambda: in_flight.update(answer=process.post("/v1/models/tiny:predict", {"instances": [helpers.b64(d) for d in encoded[:2]]}))
        )  # fmt: skip
        started = time.monotonic()
        waiting.start()
        time.sleep(0.8)
        status, body = process.post("/v1/models/tiny:predict", {"instances": [helpers.b64(d) for d in encoded]})
        assert status == 503 and "queue" in body["error"] and "full" in body["error"]
        process.process.send_signal(15)  # SIGTERM while the first request waits in its batch
        waiting.join(30)
        status, body = in_flight["answer"]
        assert status == 200 and len(body["predictions"]) == 2
        assert time.monotonic() - started >= 2.5  # it waited out its batch timeout, not cut short
        assert process.process.wait(30) == 0
        assert json.loads(process.log().strip().splitlines()[-1].split("serve: ", 1)[1])["images"] == 2
    finally:
        process.stop()
