"""The Open Inference Protocol ("V2", KServe / Triton) REST bodies, parsed and written without TensorFlow.

Follows the protocol's HTTP/REST specification (github.com/kserve/open-inference-protocol, specification/
protocol/inference_rest.md; kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol):

    POST /v2/models/<name>[/versions/<v>]/infer
      {"id": S?, "parameters": {...}?, "inputs": [{"name", "shape", "datatype", "data", "parameters"?}],
       "outputs": [{"name"}]?}
      -> {"model_name", "model_version", "id", "outputs": [{"name", "shape", "datatype", "data"}]}
    GET  /v2/models/<name>[/versions/<v>]  -> {"name", "versions", "platform", "inputs", "outputs"}

Each of the export's signatures takes one input, so the input's name picks the signature: `image_bytes`
(datatype BYTES, shape [N], `data` N base64 strings of JPEG/PNG/GIF/BMP files; the protocol's JSON carries
BYTES elements as strings, and base64 is KServe's convention for binary ones) runs `serving_default`, the
batched one; `images` (UINT8, shape [N, H, W, C], `data` row-major, flat or nested) runs `serve_images`.
Output `data` is flattened in row-major order, as the specification writes it; BYTES outputs (class names)
are UTF-8 strings; a request without an "id" is answered with a new UUID (KServe's server does the same).
Errors are {"error": "..."} with 400 (the specification's "typically 400"), 404 for an unknown model or
version (as KServe's model server), 413 and 503 as in V1 (pipeline/serving/rest.py). Not supported: the
binary tensor data extension (refused with 400 naming it) and classification parameters; request-level
"parameters" are accepted and ignored.
"""

from __future__ import annotations

import json
import math
import uuid

import numpy as np

from pipeline.serving import rest

PLATFORM = "tensorflow_savedmodel"  # Triton's name for a TensorFlow SavedModel
# TensorFlow dtype names -> the protocol's datatypes (the specification's "Tensor Data Types" table).
DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "string": "BYTES",
}
_NUMPY_KINDS = {"b": "BOOL", "S": "BYTES", "O": "BYTES", "U": "BYTES"}
REQUEST_KEYS = ("id", "parameters", "inputs", "outputs")
INPUT_KEYS = ("name", "shape", "datatype", "data", "parameters")


class InferRequest:
    """A parsed `infer` body.

    Attributes:
        signature_name: the signature whose input the request names.
        values: one entry per instance: `bytes` (BYTES input) or a uint8 array [H, W, C] (UINT8 input).
        request_id: the body's "id", or a new UUID when it has none (echoed in the response).
        output_names: the outputs asked for, in order; None for all of them.
    """

    def __init__(self, signature_name: str, values: list, request_id: str, output_names: list[str] | None):
        self.signature_name = signature_name
        self.values = values
        self.request_id = request_id
        self.output_names = output_names


def parse_infer_body(body: bytes, *, tensor_specs: dict[str, dict], max_instances: int) -> InferRequest:
    """Parses and checks an `infer` body against the served signatures.

    Args:
        body: the raw request body (UTF-8 JSON).
        tensor_specs: signature name -> {"inputs"|"outputs": {tensor name: (TF dtype name, shape)}}, as
            `model_store.LoadedVersion.tensor_specs`.
        max_instances: the most instances (first dimension) one request may carry.

    Returns:
        An InferRequest whose values are decoded image bytes (each checked to be an image format the model
        decodes) or uint8 arrays [H, W, C].

    Raises:
        rest.RestRefusal: 400 for every malformed or unusable body, naming the field or element at fault.
    """
    document = _json_object(body)
    unknown = sorted(set(document) - set(REQUEST_KEYS))
    if unknown:
        raise _invalid(f"unknown key {unknown[0]!r} in the body; allowed: {', '.join(REQUEST_KEYS)}")
    request_id = document.get("id", None)
    if request_id is not None and not isinstance(request_id, str):
        raise _invalid(f"'id' must be a string; received a JSON {type(request_id).__name__}")
    inputs = document.get("inputs")
    by_input = {name: signature for signature, specs in tensor_specs.items() for name in specs["inputs"]}
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise _invalid(
            f"'inputs' must be a list of one input object (one of: {', '.join(sorted(by_input))}); received "
            f"{_described(inputs)}"
        )
    given = inputs[0]
    unknown = sorted(set(given) - set(INPUT_KEYS))
    missing = [key for key in INPUT_KEYS[:4] if key not in given]
    if unknown or missing:
        problem = f"unknown key {unknown[0]!r}" if unknown else f"missing {', '.join(repr(key) for key in missing)}"
        raise _invalid(f"inputs[0]: {problem}; an input has: name, shape, datatype, data (parameters optional)")
    name = given["name"]
    if name not in by_input:
        raise _invalid(f"inputs[0]: unknown input {name!r}; the model's inputs: {', '.join(sorted(by_input))}")
    if isinstance(given.get("parameters"), dict) and "binary_data_size" in given["parameters"]:
        raise _invalid("inputs[0]: the binary tensor data extension is not supported; send 'data' in the JSON")
    signature_name = by_input[name]
    dtype, model_shape = tensor_specs[signature_name]["inputs"][name]
    datatype = DATATYPES.get(dtype, dtype.upper())
    if given["datatype"] != datatype:
        raise _invalid(f"inputs[0]: input {name!r} has datatype {datatype}; received {given['datatype']!r}")
    shape = given["shape"]
    if (
        not isinstance(shape, list)
        or len(shape) != len(model_shape)
        or not all(isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in shape)
    ):
        raise _invalid(
            f"inputs[0]: 'shape' must be {len(model_shape)} non-negative integers (the model's shape "
            f"{model_shape}, -1 for any size); received {shape!r}"
        )
    if any(expected not in (-1, size) for expected, size in zip(model_shape[1:], shape[1:])):
        raise _invalid(f"inputs[0]: shape {shape} does not fit the model's {model_shape}")
    if shape[0] == 0:
        raise _invalid("inputs[0]: the batch is empty (shape[0] is 0): send at least one image")
    if shape[0] > max_instances:
        raise _invalid(
            f"Task size {shape[0]} is larger than maximum input batch size {max_instances}: "
            f"send at most {max_instances} images per request"
        )
    if datatype == "BYTES":
        values = _bytes_values(given["data"], shape, name)
    else:
        values = list(_uint8_values(given["data"], shape, name))
    output_names = _requested_outputs(document.get("outputs"), tensor_specs[signature_name]["outputs"])
    return InferRequest(signature_name, values, request_id or str(uuid.uuid4()), output_names)


def _bytes_values(data, shape: list[int], name: str) -> list[bytes]:
    if not isinstance(data, list) or len(data) != shape[0] or not all(isinstance(item, str) for item in data):
        raise _invalid(
            f"inputs[0]: 'data' of the BYTES input {name!r} must be a list of {shape[0]} base64 strings "
            f"(shape {shape}); received {_described(data)}"
        )
    return [rest.decode_image_base64(item, where=f"input {name!r} element {index}") for index, item in enumerate(data)]


def _uint8_values(data, shape: list[int], name: str) -> np.ndarray:
    try:
        array = np.asarray(data)
    except ValueError:  # ragged nesting
        array = None
    if array is None or array.dtype.kind not in "iu" or array.size != math.prod(shape):
        raise _invalid(
            f"inputs[0]: 'data' of the UINT8 input {name!r} must hold {math.prod(shape)} integers "
            f"(shape {shape}, row-major, flat or nested); received {_described(data)}"
        )
    if array.size and (array.min() < 0 or array.max() > 255):
        raise _invalid(f"inputs[0]: 'data' of {name!r} must be in 0..255 (UINT8)")
    return array.astype(np.uint8).reshape(shape)


def _requested_outputs(outputs, available: dict) -> list[str] | None:
    if outputs is None:
        return None
    names = [item.get("name") if isinstance(item, dict) else None for item in outputs or [None]]
    if not isinstance(outputs, list) or not all(isinstance(item, str) for item in names):
        raise _invalid(f"'outputs' must be a list of {{\"name\": ...}} objects; received {_described(outputs)}")
    for requested in names:
        if requested not in available:
            raise _invalid(f"unknown output {requested!r}; the model's outputs: {', '.join(available)}")
    return names


def format_infer_response(
    outputs: dict[str, np.ndarray], *, model_name: str, model_version: int, request: InferRequest
) -> dict:
    """Signature outputs (first axis = instance) -> the protocol's inference response object."""
    names = request.output_names or list(outputs)
    return {
        "model_name": model_name,
        "model_version": str(model_version),
        "id": request.request_id,
        "outputs": [_response_output(name, outputs[name]) for name in names],
    }


def _response_output(name: str, array: np.ndarray) -> dict:
    datatype = _NUMPY_KINDS.get(array.dtype.kind) or DATATYPES[array.dtype.name]
    flat = array.reshape(-1)
    if datatype == "BYTES":
        data = [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in flat.tolist()]
    else:
        data = flat.tolist()
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}


def model_metadata(*, name: str, version: int, tensor_specs: dict[str, dict]) -> dict:
    """The protocol's model metadata: every signature's input (a request sends one of them) and the
    outputs (the same for every signature of an export; listed once by name)."""
    inputs, outputs = [], {}
    for specs in tensor_specs.values():
        inputs += [_metadata_tensor(key, *value) for key, value in specs["inputs"].items()]
        for key, value in specs["outputs"].items():
            outputs.setdefault(key, _metadata_tensor(key, *value))
    return {
        "name": name,
        "versions": [str(version)],
        "platform": PLATFORM,
        "inputs": inputs,
        "outputs": list(outputs.values()),
    }


def _metadata_tensor(name: str, dtype: str, shape: list[int]) -> dict:
    return {"name": name, "datatype": DATATYPES.get(dtype, dtype.upper()), "shape": shape}


def _json_object(body: bytes) -> dict:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _invalid(f"JSON Parse error: {error}") from None
    if not isinstance(document, dict):
        raise _invalid(f"the body must be a JSON object; received a JSON {type(document).__name__}")
    return document


def _described(value) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return "nothing" if value is None else f"a JSON {type(value).__name__}"


def _invalid(message: str) -> rest.RestRefusal:
    return rest.RestRefusal(rest.INVALID_ARGUMENT, message)
