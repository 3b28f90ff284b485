"""deploy/: the KServe InferenceService, the TF Serving docker command and the batching parameters, checked
for syntax and for agreeing with each other and with what `serve` reads (no cluster, no Docker)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from pipeline.serving import batching

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_inference_service_serves_the_export_with_tf_serving_batching_and_warmup(tmp_path):
    documents = list(yaml.safe_load_all((DEPLOY / "inferenceservice.yaml").read_text()))
    by_kind = {document["kind"]: document for document in documents}
    assert set(by_kind) == {"InferenceService", "ConfigMap"}
    service = by_kind["InferenceService"]
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    model = service["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "tensorflow"
    assert model["runtime"] == "kserve-tensorflow-serving"
    # TF Serving's model base path: the folder holding the numbered versions, export/<name>.
    assert model["storageUri"].startswith("pvc://image-pipeline-runs/")
    assert Path(model["storageUri"]).parent.name == "export"
    flags = dict(arg.lstrip("-").split("=", 1) for arg in model["args"])
    assert flags["enable_batching"] == "true" and flags["enable_model_warmup"] == "true"
    mount = model["volumeMounts"][0]
    assert Path(flags["batching_parameters_file"]).parent == Path(mount["mountPath"])
    volume = service["spec"]["predictor"]["volumes"][0]
    assert volume["name"] == mount["name"]
    config_map = by_kind["ConfigMap"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    in_cluster = tmp_path / Path(flags["batching_parameters_file"]).name
    in_cluster.write_text(config_map["data"][in_cluster.name])
    assert batching.read_batching_parameters(in_cluster) == batching.read_batching_parameters(
        DEPLOY / "batching_parameters.txt"
    )
    assert batching.read_batching_parameters(in_cluster).max_batch_size == 32


def test_docker_command_has_batching_and_warmup_flags():
    script = DEPLOY / "tf_serving_docker.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    for flag in (
        "--enable_batching=true",
        "--batching_parameters_file=/config/batching_parameters.txt",
        "--enable_model_warmup=true",
        "-p 127.0.0.1:8501:8501",
        "target=/models/$name",
        "MODEL_NAME=",
    ):
        assert flag in text, flag
