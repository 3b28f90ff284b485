"""TF Serving's REST request and response bodies (V1 `:predict`), parsed and written without TensorFlow.

The shapes follow TF Serving's REST API documentation (https://www.tensorflow.org/tfx/serving/api_rest,
"Request format" / "Response format") for our signatures (one input, several named outputs):

    row:       {"signature_name": S, "instances": [V, ...]} or [{"<input name>": V}, ...]
               -> {"predictions": [{"probabilities": [...], "classes": [...], "scores": [...]}, ...]}
    columnar:  {"signature_name": S, "inputs": [V, ...]} or {"<input name>": [V, ...]}
               -> {"outputs": {"probabilities": [[...], ...], "classes": [[...]], "scores": [[...]]}}

where V is `{"b64": "<standard base64>"}` for the tf.string `image_bytes` input and a nested list of
integers [H][W][C] for the uint8 `images` input. String outputs are written as JSON strings (TF Serving
base64-encodes only outputs whose name ends in `_bytes`; ours are class names). Every mistake raises
`RestRefusal` with TF Serving's HTTP status for its error code (tensorflow_serving/model_servers/
http_server.cc, ToHTTPStatusCode: INVALID_ARGUMENT 400, NOT_FOUND 404, UNAVAILABLE 503).
"""

from __future__ import annotations

import base64
import binascii
import json
import re

import numpy as np

from pipeline.data import image_files

INVALID_ARGUMENT = 400
NOT_FOUND = 404
PAYLOAD_TOO_LARGE = 413  # TF Serving has no body limit; 413 is HTTP's own answer to an oversized body
UNAVAILABLE = 503

# Standard base64 (RFC 4648 section 4), which TF Serving's absl::Base64Unescape reads; '-' and '_' are the
# URL-safe alphabet's (section 5), which it refuses.
_STANDARD_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")


class RestRefusal(Exception):
    """A request the server refuses: `status` is the HTTP status, the message goes into {"error": ...}.
    An HTTP answer, never raised to the command line (so not a UserError)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class PredictRequest:
    """A parsed `:predict` body: the signature, its input values and which format answers it.

    Attributes:
        signature_name: the requested signature ("serving_default" when the body names none).
        values: one entry per instance: `bytes` (string input) or a uint8 array [H, W, C] (image input).
        columnar: True for the "inputs" form (answered with "outputs"), False for "instances".
    """

    def __init__(self, signature_name: str, values: list, columnar: bool):
        self.signature_name = signature_name
        self.values = values
        self.columnar = columnar


def parse_predict_body(body: bytes, *, signatures: dict[str, tuple[str, str]], max_instances: int) -> PredictRequest:
    """Parses and checks a `:predict` body against the served signatures.

    Args:
        body: the raw request body (UTF-8 JSON).
        signatures: signature name -> (input name, "string" or "uint8").
        max_instances: the most instances one request may carry (the batch size limit).

    Returns:
        A PredictRequest whose values are decoded bytes (string inputs, each checked to be an encoded
        image the model decodes) or uint8 arrays [H, W, C] (all of one shape).

    Raises:
        RestRefusal: 400 for every malformed or unusable body, naming the instance at fault.
    """
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RestRefusal(INVALID_ARGUMENT, f"JSON Parse error: {error}") from None
    if not isinstance(document, dict):
        raise RestRefusal(
            INVALID_ARGUMENT, f"the body must be a JSON object; received a JSON {type(document).__name__}"
        )
    unknown = sorted(set(document) - {"signature_name", "instances", "inputs"})
    if unknown:
        raise RestRefusal(
            INVALID_ARGUMENT, f"unknown key {unknown[0]!r} in the body; allowed: signature_name, instances, inputs"
        )
    if "instances" in document and "inputs" in document:
        raise RestRefusal(
            INVALID_ARGUMENT, "both 'instances' (row format) and 'inputs' (columnar format) given; send one"
        )
    if "instances" not in document and "inputs" not in document:
        raise RestRefusal(INVALID_ARGUMENT, "missing 'instances' (row format) or 'inputs' (columnar format)")
    signature_name = document.get("signature_name", "serving_default")
    if not isinstance(signature_name, str) or signature_name not in signatures:
        raise RestRefusal(
            INVALID_ARGUMENT,
            f"Serving signature name: {signature_name!r} not found in signature def; "
            f"the model has: {', '.join(sorted(signatures))}",
        )
    input_name, kind = signatures[signature_name]
    columnar = "inputs" in document
    raw = (
        _columnar_values(document["inputs"], input_name) if columnar else _row_values(document["instances"], input_name)
    )
    if not raw:
        raise RestRefusal(
            INVALID_ARGUMENT, f"'{'inputs' if columnar else 'instances'}' is empty: send at least one image"
        )
    if len(raw) > max_instances:
        raise RestRefusal(
            INVALID_ARGUMENT,
            f"Task size {len(raw)} is larger than maximum input batch size {max_instances}: "
            f"send at most {max_instances} images per request",
        )
    if kind == "string":
        values = [_image_bytes(value, index) for index, value in enumerate(raw)]
    else:
        values = _uint8_images(raw)
    return PredictRequest(signature_name, values, columnar)


def _row_values(instances, input_name: str) -> list:
    if not isinstance(instances, list):
        raise RestRefusal(INVALID_ARGUMENT, f"'instances' must be a list; received a JSON {type(instances).__name__}")
    values = []
    for index, instance in enumerate(instances):
        if isinstance(instance, dict) and set(instance) != {"b64"}:
            if set(instance) != {input_name}:
                raise RestRefusal(
                    INVALID_ARGUMENT,
                    f"instance {index}: keys {sorted(instance)}; the signature's one input is {input_name!r}",
                )
            instance = instance[input_name]
        values.append(instance)
    return values


def _columnar_values(inputs, input_name: str) -> list:
    if isinstance(inputs, dict) and set(inputs) != {"b64"}:
        if set(inputs) != {input_name}:
            raise RestRefusal(
                INVALID_ARGUMENT, f"'inputs' has keys {sorted(inputs)}; the signature's one input is {input_name!r}"
            )
        inputs = inputs[input_name]
    if not isinstance(inputs, list):
        raise RestRefusal(INVALID_ARGUMENT, "'inputs' must hold a list of images (one per instance)")
    return inputs


def _image_bytes(value, index: int) -> bytes:
    """{"b64": ...} -> the decoded bytes, checked to be an image format the model's decoder reads."""
    if not (isinstance(value, dict) and isinstance(value.get("b64"), str)):
        raise RestRefusal(
            INVALID_ARGUMENT,
            f'instance {index}: expected {{"b64": "<base64 of a JPEG/PNG file>"}} for a tf.string input; '
            f"received a JSON {type(value).__name__}",
        )
    return decode_image_base64(value["b64"], where=f"instance {index}")


def decode_image_base64(text: str, *, where: str) -> bytes:
    """Standard base64 text -> the encoded image's bytes, checked to be a format the model's decoder reads.

    Args:
        text: the base64 string from the request.
        where: how messages name the value, e.g. "instance 2" (V1) or "input 'image_bytes' element 2" (V2).

    Raises:
        RestRefusal: 400 for bad or URL-safe base64, bytes that are not an image, an image format the model
            cannot decode.
    """
    encoded = text.encode("ascii", errors="replace")
    if not _STANDARD_BASE64.fullmatch(encoded) or len(encoded) % 4:
        url_safe = b"-" in encoded or b"_" in encoded
        hint = " (URL-safe base64 with '-' or '_' is not accepted: use the standard alphabet with '+' and '/')"
        raise RestRefusal(INVALID_ARGUMENT, f"{where}: Unable to base64 decode{hint if url_safe else ''}")
    try:
        data = base64.b64decode(encoded, validate=True)
    except binascii.Error as error:
        raise RestRefusal(INVALID_ARGUMENT, f"{where}: Unable to base64 decode ({error})") from None
    kind = image_files.sniff_format(data[:64])
    if kind is None:
        raise RestRefusal(
            INVALID_ARGUMENT,
            f"{where}: not an image ({len(data)} bytes that are not {', '.join(image_files.DECODABLE.values())})",
        )
    if kind not in image_files.DECODABLE:
        raise RestRefusal(
            INVALID_ARGUMENT,
            f"{where}: {kind} is not supported; the model decodes {', '.join(image_files.DECODABLE.values())}",
        )
    return data


def _uint8_images(raw: list) -> list:
    """Nested lists [H][W][C] of integers in 0..255, all of one shape -> uint8 arrays."""
    images = []
    for index, value in enumerate(raw):
        try:
            array = np.asarray(value)
        except ValueError:  # ragged nesting
            array = None
        if array is None or array.ndim != 3 or not np.issubdtype(array.dtype, np.integer):
            raise RestRefusal(
                INVALID_ARGUMENT,
                f"instance {index}: the uint8 'images' input takes one [height][width][channels] list of integers "
                f"per instance",
            )
        if array.size and (array.min() < 0 or array.max() > 255):
            raise RestRefusal(INVALID_ARGUMENT, f"instance {index}: values must be in 0..255 (uint8)")
        if images and array.shape != images[0].shape:
            raise RestRefusal(
                INVALID_ARGUMENT,
                f"instance {index}: shape {list(array.shape)} differs from instance 0's {list(images[0].shape)}; "
                f"a batch holds images of one size",
            )
        images.append(array.astype(np.uint8))
    return images


def format_predictions(outputs: dict[str, np.ndarray], *, columnar: bool) -> dict:
    """Signature outputs (first axis = instance) -> TF Serving's response object.

    Row format: {"predictions": [{name: value, ...} per instance]}; columnar: {"outputs": {name: values}}.
    With a single output TF Serving leaves the names out; both forms are handled.
    """
    plain = {name: _json_values(array) for name, array in outputs.items()}
    if columnar:
        return {"outputs": next(iter(plain.values())) if len(plain) == 1 else plain}
    if len(plain) == 1:
        return {"predictions": next(iter(plain.values()))}
    count = len(next(iter(plain.values())))
    return {"predictions": [{name: values[row] for name, values in plain.items()} for row in range(count)]}


def _json_values(array: np.ndarray):
    if array.dtype.kind in ("S", "O"):  # class names: bytes -> str, row by row (np.vectorize costs more)
        return _decoded(array.tolist())
    return array.tolist()


def _decoded(values):
    if isinstance(values, list):
        return [_decoded(value) for value in values]
    return values.decode("utf-8") if isinstance(values, bytes) else str(values)


def error_body(message: str) -> dict:
    """TF Serving's error object: {"error": "<message>"}."""
    return {"error": message}
