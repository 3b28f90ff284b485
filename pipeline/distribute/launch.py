"""`python -m pipeline launch --workers N EXPERIMENT`: N local training processes, one cluster.

Each worker is `python -m pipeline train EXPERIMENT ...` with its own TF_CONFIG naming every worker on a
free localhost port, so `distribute.strategy: auto` resolves to multi_worker (tf.distribute's
MultiWorkerMirroredStrategy). Every output line is prefixed with `[worker i]`. When a worker exits with
a non-zero status the others are stopped (they would otherwise wait forever in a collective op) and
launch exits non-zero naming it. All workers share one run directory, so the same command with the
same --run-dir resumes.

For one machine and for tests; on a cluster, start one `python -m pipeline train` per host with that
host's TF_CONFIG (deploy/README.md). Standard library only: the launcher never imports TensorFlow.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from pipeline.config import arguments
from pipeline.core import signals

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STOP_GRACE_SECONDS = 10.0  # time a stopped worker gets to exit on SIGTERM before SIGKILL
POLL_SECONDS = 0.1


def free_ports(count: int, host: str = "localhost") -> list[int]:
    """`count` distinct TCP ports that were free on `host` a moment ago (the OS picks them).

    The sockets are closed before the workers bind, so another program could take a port in between;
    on a quiet machine that does not happen, and a worker that fails to bind exits, which stops the job.
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(ports: list[int], index: int, host: str = "localhost") -> str:
    """TF_CONFIG JSON for worker `index` of a cluster of workers on host:port (worker 0 is the chief)."""
    return json.dumps(
        {"cluster": {"worker": [f"{host}:{port}" for port in ports]}, "task": {"type": "worker", "index": index}}
    )


def _forward(stream, prefix: str, lock: threading.Lock, out) -> None:
    """Copies each line of a worker's output to `out` with `prefix` in front (bytes in, text out).

    A carriage return (a progress bar redrawing itself) also ends a line: behind a prefix it would
    move the cursor back over the prefix on a terminal, and hide the text before it in a log.
    """
    for raw in iter(stream.readline, b""):
        parts = [part for part in raw.decode("utf-8", errors="replace").rstrip("\r\n").split("\r") if part]
        with lock:
            for part in parts or [""]:
                out.write(f"{prefix}{part}\n")
            out.flush()
    stream.close()


def _exit_status(returncode: int) -> int:
    """A process's status as a shell reports it: 128 + N for death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def _describe_status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _stop(processes: list[subprocess.Popen], grace: float) -> None:
    """SIGTERM to every running process, then SIGKILL to those still running after `grace` seconds."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def launch(
    workers: int,
    argv: list[str],
    *,
    command: list[str] | None = None,
    out=None,
    err=None,
    stop_grace: float = STOP_GRACE_SECONDS,
    timeout: float | None = None,
) -> int:
    """Runs `workers` local processes as one tf.distribute cluster and waits for them.

    Args:
        workers: number of processes (>= 1).
        argv: arguments after `python -m pipeline train`, e.g. ["tiny", "--run-dir", "runs/x"].
        command: the program each worker runs instead of [python, -m, pipeline, train] (tests use a
            stand-in script); argv is appended to it.
        out, err: text streams for the prefixed worker output and launch's own messages
            (default sys.stdout, sys.stderr).
        stop_grace: seconds a stopped worker gets between SIGTERM and SIGKILL.
        timeout: seconds after which every worker is stopped and 124 returned (None: no limit); a
            worker stuck in a collective op waiting for a dead peer would otherwise wait forever.

    Returns:
        0 when every worker exits with 0; otherwise the status of the first worker that failed
        (128 + N for signal N), after stopping the others; 124 after `timeout`; 130 when launch itself
        is interrupted (Ctrl-C), 143 when it is sent SIGTERM (`signals.install` must be in place, as the CLI
        does), in both cases after its workers have stopped.

    Raises:
        ValueError: workers < 1.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1. Received: workers={workers}")
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    program = list(command) if command else [sys.executable, "-m", "pipeline", "train"]
    ports = free_ports(workers)
    lock = threading.Lock()
    processes, threads = [], []
    for index in range(workers):
        # Unbuffered, so lines arrive as they are printed and interleave in real order.
        # PYTHONPATH: `-m pipeline` resolves from any working directory, and relative paths in argv keep
        # their meaning because the workers keep launch's working directory.
        env = dict(
            os.environ,
            TF_CONFIG=tf_config(ports, index),
            PYTHONUNBUFFERED="1",
            **{signals.PARENT_PID_VARIABLE: str(os.getpid())},  # a worker stops when launch is gone (SIGKILL too)
            PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
        )
        process = subprocess.Popen(
            program + list(argv), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        thread = threading.Thread(target=_forward, args=(process.stdout, f"[worker {index}] ", lock, out), daemon=True)
        thread.start()
        processes.append(process)
        threads.append(thread)

    status, message = 0, ""
    deadline = None if timeout is None else time.monotonic() + timeout

    def first_failure():
        # Polled in index order every POLL_SECONDS: the first failure seen is the one that started it
        # (a dead peer makes the others fail too, a moment later).
        return next(
            ((index, process.returncode) for index, process in enumerate(processes) if process.poll() not in (None, 0)),
            None,
        )

    try:
        failure = first_failure()
        while failure is None and any(process.poll() is None for process in processes):
            if deadline is not None and time.monotonic() > deadline:
                _stop(processes, stop_grace)
                status, message = 124, f"launch: timed out after {timeout:g} s; stopped all workers"
                break
            time.sleep(POLL_SECONDS)
            failure = first_failure()
        if failure is not None and not status:
            index, returncode = failure
            running = [i for i, process in enumerate(processes) if process.poll() is None]
            _stop(processes, stop_grace)
            status = _exit_status(returncode)
            stopped = f"; stopped worker(s) {', '.join(map(str, running))}" if running else ""
            message = f"launch: worker {index} {_describe_status(returncode)}{stopped}"
    except KeyboardInterrupt as interrupt:
        # Ctrl-C reached the workers too (same process group); SIGTERM (signals.Terminated) reached launch
        # only: either way each worker gets SIGTERM, then SIGKILL after the grace period, before launch ends.
        _stop(processes, stop_grace)
        status = signals.exit_status(interrupt)
        message = (
            f"launch: {signals.describe(interrupt)}; stopped all workers; run the same command again to resume "
            f"from the last completed epoch"
        )
    for thread in threads:
        thread.join(timeout=5)
    if status:
        with lock:
            print(message, file=err, flush=True)
    return status


def add_arguments(parser) -> None:
    """Adds launch's arguments to an argparse (sub)parser."""
    parser.add_argument(
        "--workers",
        type=int,
        required=True,
        metavar="N",
        help="number of local worker processes (one MultiWorkerMirroredStrategy cluster)",
    )
    parser.add_argument("experiment", help="experiment name (experiments/<name>.yaml) or path to a YAML file")
    arguments.add_overrides(parser, "override a config value, passed to every worker (repeatable)")
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="run directory shared by the workers (default runs/<experiment>/<time>); "
        "the same command with the same --run-dir resumes",
    )


def run(args, *, name: str, strategy: str) -> int:
    """The `launch` command: picks the run directory and starts the workers. The CLI validated the
    experiment exactly as `train` does before calling this, so a misspelt model starts no process.

    Args:
        args: the parsed `launch` arguments (workers, experiment, overrides, run_dir).
        name: the experiment's name (the default run directory's); strategy: `distribute.strategy`.

    Raises:
        pipeline.config.ConfigError: --workers below 1, or a distribute.strategy that cannot span workers
            (exit code 2).
    """
    from pipeline import config as config_lib  # TF-free

    if args.workers < 1:
        raise config_lib.ConfigError(f"--workers must be at least 1. Received: --workers {args.workers}")
    if args.workers > 1 and strategy not in ("auto", "multi_worker"):
        raise config_lib.ConfigError(
            f"launch --workers {args.workers} needs distribute.strategy auto or multi_worker (otherwise each "
            f"worker would train alone into the same run directory). Received: distribute.strategy={strategy!r}"
        )
    from pipeline.config import rundir  # TF-free

    run_dir = Path(args.run_dir) if args.run_dir else rundir.default_run_dir(name)
    print(
        f"launch: {args.workers} worker(s), run directory {run_dir} (rerun with --run-dir {run_dir} to resume)",
        file=sys.stderr,
        flush=True,
    )
    argv = [
        args.experiment,
        *[item for override in args.overrides for item in ("--set", override)],
        "--run-dir",
        str(run_dir),
    ]
    return launch(args.workers, argv)
