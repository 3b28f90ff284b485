"""Command line: `python -m pipeline {train,evaluate,export,predict,summary,report,launch,tune,serve,audit,data} ...`.

Thin on purpose: parse arguments, parse the config once, import the one command's module, call one
function. Argument parsing and config validation import no TensorFlow, so `--help`, `--print-config` and
every config error answer at once. User errors (`pipeline.core.errors.UserError`: bad config, missing data, wrong
run directory) print one message and exit with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from pipeline.core import cpu_kernels, errors, signals


def _parser() -> argparse.ArgumentParser:
    from pipeline import tools  # stdlib-only at import: parsing stays fast

    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train an experiment (resumes when --run-dir holds a run)")
    train.add_argument("experiment", help="experiment name (experiments/<name>.yaml) or path to a YAML file")
    _add_overrides(train, "e.g. --set train.epochs=3")
    train.add_argument("--run-dir", type=Path, help="run directory (default runs/<experiment>/<time>)")
    train.add_argument("--print-config", action="store_true", help="print the resolved config and exit")

    evaluate = commands.add_parser(
        "evaluate", help="evaluate a run's best checkpoint (or one of its .tflite exports) on the test split"
    )
    evaluate.add_argument("run_dir", type=Path, metavar="RUN_DIR_OR_TFLITE")

    export = commands.add_parser("export", help="export a run's best checkpoint as a SavedModel or TFLite")
    export.add_argument("run_dir", type=Path)
    export.add_argument("--out", type=Path, help="export root (default RUN_DIR/export)")
    export.add_argument("--version", type=int, help="version number (default: next free)")
    export.add_argument("--top-k", type=int, help="classes returned per image (default export.top_k)")
    export.add_argument("--checkpoint", choices=["best", "last"], default="best")
    export.add_argument(
        "--format",
        choices=["saved_model", "tflite"],
        default="saved_model",
        help="saved_model (default RUN_DIR/export) or tflite (default RUN_DIR/export_tflite)",
    )
    export.add_argument(
        "--quantize",
        choices=["int8", "float16"],
        help="tflite only: int8 (full-integer, calibrated on training images) or float16 weights",
    )

    predict = commands.add_parser("predict", help="classify image files with an exported SavedModel")
    predict.add_argument(
        "export_dir", type=Path, help="run directory, model directory (export/<name>) or version directory"
    )
    predict.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="image files or folders (searched recursively)"
    )
    predict.add_argument("--top-k", type=int, help="classes per image (default: the export's top k)")
    predict.add_argument("--format", choices=["table", "csv", "json"], default="table")
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument(
        "--max-pixels",
        type=int,
        default=89_478_485,
        help="images whose header promises more pixels are refused undecoded (default Pillow's limit; 0: none)",
    )

    summary = commands.add_parser("summary", help="layer table, parameters and FLOPs of an experiment's network")
    summary.add_argument("experiment", help="experiment name (experiments/<name>.yaml) or path to a YAML file")
    _add_overrides(summary, "e.g. --set input.image_size=[64,64]")
    summary.add_argument("--num-classes", type=int, help="class count (default: the dataset's)")

    for name, module in OPTIONAL_COMMANDS.items():
        try:
            command_module = __import__(module, fromlist=["add_arguments"])
        except ImportError:
            continue
        help_text = getattr(command_module, "HELP", None) or (command_module.__doc__ or name).splitlines()[0]
        command_module.add_arguments(commands.add_parser(name, help=help_text))

    tools.add_parser(commands)
    return parser


# Commands that import TensorFlow at once (`train` and `summary` do after their config is validated;
# `report` and `launch` never do in this process).
TENSORFLOW_COMMANDS = ("evaluate", "export", "predict", "data", "serve", "audit")

# Commands whose module owns its arguments (`HELP`, `add_arguments(parser)`, `run(args) -> int`).
OPTIONAL_COMMANDS = {
    "report": "pipeline.evaluation.compare_runs",
    "launch": "pipeline.distribute.launch",
    "tune": "pipeline.tune.command",
    "serve": "pipeline.serving.server",
    "audit": "pipeline.audit",
}


def _add_overrides(parser: argparse.ArgumentParser, example: str) -> None:
    from pipeline.config import arguments  # TF-free

    arguments.add_overrides(parser, f"override a config value, {example} (repeatable)")


def quiet_tensorflow() -> None:
    """Keeps TensorFlow's C++ start-up log out of every command's output, unless the user set
    TF_CPP_MIN_LOG_LEVEL (then TensorFlow logs as the user asked).

    Where the lines come from: TensorFlow's shared libraries log through Abseil, and everything logged
    before `absl::InitializeLog()` goes to stderr whatever its severity, with a "WARNING: All log messages
    before absl::InitializeLog() is called are written to STDERR" preamble (abseil/abseil-cpp#1718, #1957;
    tensorflow/tensorflow#102212). TF_CPP_MIN_LOG_LEVEL, which TensorFlow's own logger honours afterwards,
    cannot reach them: at import they print "oneDNN custom operations are on" and, on a machine without
    a GPU, "Could not find cuda drivers" (each twice: two libraries), then "failed call to cuInit" at the
    first device query. So the import and that first query run with the process's stderr (fd 2) captured,
    and the captured text is written back without those INFO lines and the no-GPU cuInit error. Anything
    else (a real error, a Python warning) still reaches the user.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"  # TensorFlow's logger, after start-up: warnings and errors only
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # the cuInit probe, inside the capture
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                if not _startup_noise(line)
            ]
            sys.stderr.write("".join(kept))


def _startup_noise(line: str) -> bool:
    """INFO lines (`I0000 ...`) and Abseil's preamble logged before InitializeLog, and the cuInit error a
    machine without a usable GPU reports (CUDA error 303 / no CUDA-capable device)."""
    return (
        line.startswith("WARNING: All log messages before absl::InitializeLog()")
        or (len(line) > 5 and line[0] == "I" and line[1:5].isdigit())
        or ("failed call to cuInit" in line and ("(303)" in line or "NO_DEVICE" in line))
    )


def run_command(args) -> int:
    """Runs one parsed command; imports only that command's module."""
    if args.command == "train":
        from pipeline import config as config_lib
        from pipeline import experiment

        config = experiment.load_experiment(args.experiment, args.overrides)
        if args.print_config:
            print(config_lib.dump_yaml(config), end="")
            return 0
        cpu_kernels.choose(config.train.cpu_kernels)  # read by TensorFlow once, at its import
        quiet_tensorflow()
        from pipeline import run as train

        train.train(config, run_dir=args.run_dir)
    elif args.command == "evaluate":
        if args.run_dir.suffix == ".tflite":
            from pipeline.evaluation import tflite_eval

            tflite_eval.evaluate_tflite(args.run_dir)
            return 0
        from pipeline.evaluation import evaluate

        evaluate.evaluate_run(args.run_dir)
    elif args.command == "export":
        from pipeline.serving import export

        if args.format == "tflite":
            if args.top_k is not None:
                raise export.ExportError(
                    "--top-k applies to --format saved_model only; the TFLite model outputs all probabilities"
                )
            path = export.export_run_tflite(
                args.run_dir, out_dir=args.out, version=args.version, checkpoint=args.checkpoint, quantize=args.quantize
            )
        else:
            if args.quantize is not None:
                raise export.ExportError("--quantize applies to --format tflite only")
            path = export.export_run(
                args.run_dir, out_dir=args.out, version=args.version, top_k=args.top_k, checkpoint=args.checkpoint
            )
        print(f"exported {path}")
    elif args.command == "data":
        from pipeline import tools

        return tools.main(args)
    elif args.command == "summary":
        from pipeline import experiment

        config = experiment.load_experiment(args.experiment, args.overrides)  # config errors before TensorFlow
        quiet_tensorflow()
        from pipeline.inspection import summary

        return summary.summary_command(config, num_classes=args.num_classes)
    elif args.command == "predict":
        from pipeline.serving import predict

        return predict.predict_command(
            args.export_dir,
            args.paths,
            top_k=args.top_k,
            output_format=args.format,
            batch_size=args.batch_size,
            max_pixels=args.max_pixels,
        )
    elif args.command == "launch":
        from pipeline import experiment
        from pipeline.distribute import launch

        config = experiment.load_experiment(args.experiment, args.overrides)  # as `train` does: no worker starts
        return launch.run(args, name=config.name, strategy=config.distribute.strategy)
    elif args.command == "tune":
        from pipeline.tune import command as tune

        if args.status is not None:
            return tune.run(args)
        if args.experiment is None:
            raise errors.UserError("tune: name an experiment, or pass --status DIR")
        from pipeline import experiment

        config = experiment.load_experiment(args.experiment, args.overrides)  # as `train` does, before any trial
        return tune.run(args, config, check=_checked_config)
    elif args.command in OPTIONAL_COMMANDS:
        return __import__(OPTIONAL_COMMANDS[args.command], fromlist=["run"]).run(args)
    return 0


# What an interrupted command leaves, said in the one line printed when Ctrl-C or SIGTERM stops it.
INTERRUPTED_STATE = {
    "train": "run the same command again to resume from the last completed epoch",
    "launch": "stopped all workers; run the same command again to resume from the last completed epoch",
    "evaluate": "metrics.json and evaluation/ were left as they were (they are written whole, at the end)",
    "export": "no new version was written (exports are renamed into place only when complete)",
    "predict": "the files listed above were predicted; the others were not",
    "data": "files already written are complete (written whole, then renamed); run the command again to finish",
    "tune": "finished trials are kept; run the same command again to resume the interrupted trials",
    "serve": "the requests in flight were answered before it stopped; nothing was written",
}


def _checked_config(data: dict):
    """A trial's config dict validated as `train` validates its experiment (schema, then registries)."""
    from pipeline import config as config_lib
    from pipeline import experiment

    config = config_lib.from_dict(data)
    experiment.check_registries(config)
    return config


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # file names that are not UTF-8 print as their bytes, not a crash
        sys.stdout.reconfigure(errors="surrogateescape")
    previous = signals.install()  # SIGTERM (kill, timeout, a scheduler, Kubernetes) stops us as Ctrl-C does
    signals.watch_parent()  # a `launch` worker stops when launch is gone, however launch ended
    try:
        if args.command in TENSORFLOW_COMMANDS:
            quiet_tensorflow()
        return run_command(args)
    except errors.UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return errors.USER_ERROR_EXIT_CODE
    except Exception as error:  # a full disk met outside our atomic writes (CSV log, TensorBoard, HDF5)
        from pipeline.core import fileio

        reason = fileio.storage_error(error)
        if reason is None:
            raise
        path = getattr(error, "filename", None) or "a file of the run"
        print(f"error: {fileio.StorageFullError(path, reason)}", file=sys.stderr)
        return errors.USER_ERROR_EXIT_CODE
    except KeyboardInterrupt as interrupt:
        state = INTERRUPTED_STATE.get(args.command, "anything written so far was written whole")
        print(f"\n{signals.describe(interrupt)}; {state}", file=sys.stderr, flush=True)
        return signals.exit_status(interrupt)
    finally:
        signals.restore(previous)
