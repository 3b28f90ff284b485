"""TFLite for devices: file size and test accuracy of float32, float16 and int8 exports of trained runs.

    .venv/bin/python -m benchmarks.tflite_quantization --run-dir runs/mnist_lenet/<time> [--run-dir ...]

Each run's best checkpoint is exported three times into a temporary folder (the run is not changed) with
`export --format tflite [--quantize float16|int8]`'s code, and each file evaluated on the run's whole test
split with the TFLite interpreter (`evaluate FILE.tflite`'s code), next to the run's Keras float32 accuracy.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from benchmarks import common


def main(argv=None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, action="append", required=True, help="a trained run (repeatable)")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv

    from pipeline.evaluation import tflite_eval
    from pipeline.serving import export

    info = common.machine()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tflite-bench-") as temporary:
        for run_dir in args.run_dir:
            float_size = None
            for quantize in (None, "float16", "int8"):
                started = time.perf_counter()
                folder = export.export_run_tflite(run_dir, out_dir=Path(temporary) / run_dir.name, quantize=quantize)
                seconds = time.perf_counter() - started
                result = tflite_eval.evaluate_tflite(folder / "model.tflite", run_dir=run_dir, log=lambda *a: None)
                float_size = float_size or result["bytes"]
                keras_accuracy = result["keras_test_accuracy"]
                rows.append([
                    folder.parent.name, quantize or "float32", result["bytes"] / 1024, result["bytes"] / float_size,
                    100 * result["test_accuracy"],
                    100 * (result["test_accuracy"] - keras_accuracy) if keras_accuracy is not None else None,
                    result["test_images"], seconds,
                ])  # fmt: skip
                print(common.markdown_table(HEADERS, [formatted(rows[-1])]).splitlines()[-1], flush=True)
    table = common.markdown_table(HEADERS, [formatted(row) for row in rows])
    notes = (
        "- Accuracy change: the TFLite file's test accuracy minus the run's Keras float32 test accuracy "
        "(metrics.json), in points. int8: full-integer post-training quantization calibrated on 200 training "
        "images through the eval transform."
    )
    common.finish(args, title="TFLite size and accuracy (float32, float16, int8)", module="benchmarks.tflite_quantization",
                  argv=argv, table=table, notes=notes, info=info)  # fmt: skip
    return 0


def formatted(row: list) -> list:
    """Accuracy and its change with two decimals (a quantization changes it by hundredths of a point)."""
    model, weights, kib, ratio, accuracy, change, images, seconds = row
    change = "n/a" if change is None else f"{change:+.2f}"
    return [model, weights, kib, f"{ratio:.2f}", f"{accuracy:.2f}", change, images, seconds]


HEADERS = ["model", "weights", "KiB", "size vs float32", "test accuracy %", "change (points)", "images", "export s"]

if __name__ == "__main__":
    sys.exit(main())
