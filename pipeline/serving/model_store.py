"""The served model: its versions on disk, the one loaded, and new versions picked up without a restart.

TF Serving's default version policy ("latest"): the highest numbered version folder holding a
`saved_model.pb` is served; a higher one appearing later is loaded (and warmed up) in the background and
replaces it once ready, so requests never wait for a load. The folder is polled every `poll_seconds`
(TF Serving's --file_system_poll_wait_seconds, default 1). Exports are renamed into place complete
(pipeline/serving/export.py), so a numbered folder with saved_model.pb is whole; a version that fails to
load is logged and retried only when its folder changes.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from pipeline.serving import warmup
from pipeline.serving.predict import PredictError, resolve_export


def _version_folders(model_dir: Path) -> dict[int, Path]:
    try:
        children = list(model_dir.iterdir())
    except OSError:
        return {}
    return {int(c.name): c for c in children if c.name.isdigit() and (c / "saved_model.pb").is_file()}


def _dtype_and_shape(spec: tf.TensorSpec) -> tuple[str, list[int]]:
    return spec.dtype.name, [-1 if size is None else size for size in spec.shape.as_list()]


class LoadedVersion:
    """One SavedModel version: its signatures, their input names and kinds, and its metadata."""

    def __init__(self, version_dir: Path):
        self.version_dir = Path(version_dir)
        self.version = int(self.version_dir.name)
        self._loaded = tf.saved_model.load(str(self.version_dir))
        self.signatures = {}  # name -> (input name, "string" | "uint8")
        # name -> {"inputs"|"outputs": {tensor name: (dtype name, shape with -1 for any size)}} (V2 metadata)
        self.tensor_specs = {}
        for name, function in self._loaded.signatures.items():
            inputs = function.structured_input_signature[1]
            if len(inputs) != 1:
                continue  # not one of the export's image signatures
            input_name, spec = next(iter(inputs.items()))
            kind = {tf.string: "string", tf.uint8: "uint8"}.get(spec.dtype)
            if kind is not None:
                self.signatures[name] = (input_name, kind)
                self.tensor_specs[name] = {
                    "inputs": {input_name: _dtype_and_shape(spec)},
                    "outputs": {key: _dtype_and_shape(value) for key, value in function.structured_outputs.items()},
                }
        if "serving_default" not in self.signatures:
            raise PredictError(
                f"{self.version_dir}: no 'serving_default' signature taking one tf.string or uint8 input "
                f"(it has: {', '.join(self._loaded.signatures) or 'none'})"
            )
        self.metadata = self._signature_def_map()

    def run(self, signature_name: str, values: list) -> dict[str, np.ndarray]:
        """Runs a signature on a batch: bytes for string inputs, uint8 [H, W, C] arrays for image inputs."""
        input_name, kind = self.signatures[signature_name]
        if kind == "string":
            tensor = tf.constant(values, dtype=tf.string)
        else:
            tensor = tf.constant(np.stack(values), dtype=tf.uint8)
        outputs = self._loaded.signatures[signature_name](**{input_name: tensor})
        return {name: value.numpy() for name, value in outputs.items()}

    def _signature_def_map(self) -> dict:
        """GetModelMetadata's `signature_def` field as TF Serving's REST API writes it (proto JSON)."""
        saved_model = saved_model_pb2.SavedModel()
        saved_model.ParseFromString((self.version_dir / "saved_model.pb").read_bytes())
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, definition in saved_model.meta_graphs[0].signature_def.items():
            signature_map.signature_def[name].CopyFrom(definition)
        return json_format.MessageToDict(signature_map, preserving_proto_field_name=True)


class ModelStore:
    """The served model's name, base path and current version, kept up to date by a polling thread."""

    def __init__(self, path: Path, *, model_name: str | None = None, poll_seconds: float = 1.0, log=print):
        """Resolves EXPORT_OR_RUN_DIR: a run directory, export/<name> or one version folder (then only it).

        Raises:
            PredictError: nothing servable there (the message lists what was looked for).
        """
        version_dir = resolve_export(Path(path))
        self.pinned = Path(path).resolve() == version_dir.resolve()
        self.model_dir = version_dir.parent
        self.name = model_name or self.model_dir.name
        self.poll_seconds = poll_seconds
        self._log = log
        self._lock = threading.Lock()
        self._failed: dict[int, float] = {}  # version -> folder mtime when it failed to load
        self.ended: list[int] = []
        self.current = self._load(version_dir)
        self._stop = threading.Event()
        self._poller = None

    def _load(self, version_dir: Path) -> LoadedVersion:
        loaded = LoadedVersion(version_dir)
        replayed = warmup.replay(version_dir, loaded.run, model_name=self.name)
        self._log(
            f"loaded {self.name} version {loaded.version} from {version_dir}"
            + (f"; warm-up: {replayed} requests replayed" if replayed else "; no warm-up requests")
        )
        return loaded

    def start_polling(self):
        if self.pinned or self.poll_seconds <= 0:
            return
        self._poller = threading.Thread(target=self._poll_loop, name="version-poll", daemon=True)
        self._poller.start()

    def stop(self):
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=10)

    def _poll_loop(self):
        while not self._stop.wait(self.poll_seconds):
            self.poll_once()

    def poll_once(self):
        """Loads the highest version folder if it is newer than the one served."""
        folders = _version_folders(self.model_dir)
        if not folders:
            return
        newest = max(folders)
        if newest <= self.current.version:
            return
        mtime = folders[newest].stat().st_mtime
        if self._failed.get(newest) == mtime:
            return
        try:
            loaded = self._load(folders[newest])
        except Exception as error:  # noqa: BLE001  (a broken version must not stop the server)
            self._failed[newest] = mtime
            self._log(
                f"version {newest} of {self.name} failed to load ({type(error).__name__}: {error}); still serving "
                f"version {self.current.version}"
            )
            return
        with self._lock:
            self.ended.append(self.current.version)
            self.current = loaded
        self._log(f"now serving {self.name} version {loaded.version}")

    def version(self, requested: int | None) -> LoadedVersion | None:
        """The loaded version for a request (None: the latest), or None when that version is not served."""
        current = self.current
        if requested is None or requested == current.version:
            return current
        return None

    def status(self, requested: int | None) -> list[dict]:
        """GetModelStatus' `model_version_status` as TF Serving's REST API writes it."""
        entries = [(self.current.version, "AVAILABLE")] + [(version, "END") for version in reversed(self.ended)]
        if requested is not None:
            entries = [entry for entry in entries if entry[0] == requested]
        return [
            {"version": str(version), "state": state, "status": {"error_code": "OK", "error_message": ""}}
            for version, state in entries
        ]
