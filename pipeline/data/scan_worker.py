"""The pre-training scan in worker processes (issue 24): a module-level function of ours (for the scan,
`image_files.check_fields`) applied to chunks of file paths in fresh interpreters.

Why processes: the check's per-file Python (open, sniff, header, Pillow, numpy) holds the GIL, so threads
in one process keep about one core busy on small files (0.4 ms of Python per 64x48 JPEG: 44 s of a
100,000-file folder's start). Why not `multiprocessing`: its spawn start imports the caller's `__main__`
script again in every worker (a user's training script without an `if __name__ == "__main__"` guard would
start training again there), and fork is unsafe once TensorFlow's threads run. So each worker is started as
`python -m pipeline.data.scan_worker "module:function" OPTIONS`, imports that function's module (the scan's:
the standard library, numpy and Pillow; TensorFlow only if a file needs its decoder), and speaks one JSON
line per chunk over its pipes:

    in:  ["path", ...]                    out: [function(path, **options), ...]  (or {"error": "..."})

The function is named, not pickled, as pickle names functions too; this module imports none of ours. A
worker ignores SIGINT (the parent, which gets Ctrl-C, ends them all) and exits when its stdin closes, so a
parent killed with SIGKILL leaves no worker behind. Any chunk a worker cannot answer (it died, it could not
start, a file raised) is handed back; the caller checks those files itself, so every verdict and every
error still comes from the same function.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

CHUNK = 64  # files per exchange: ~2 ms of JSON and pipe per chunk against 25-75 ms of checking
MIN_FILES = 2_000  # below this, starting interpreters (~0.2 s each) costs more than it saves


def _worker_command(function: str, options: dict) -> list[str]:
    return [sys.executable, "-m", "pipeline.data.scan_worker", function, json.dumps(options)]


def _worker_env() -> dict:
    """The caller's environment with the folder holding `pipeline` first on PYTHONPATH (the caller may have
    imported it from its working directory, which the worker need not share), and TensorFlow's start-up
    chatter off for workers that load it."""
    root = str(Path(__file__).resolve().parent.parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def map_in_processes(
    function: str, paths: list, options: dict, *, processes: int, on_chunk=None
) -> tuple[dict, list[int]]:
    """`function(paths[i], **options)` for every i, in `processes` worker interpreters.

    Args:
        function: "package.module:name" of a module-level function taking a path (str) and `options`, and
            returning a JSON-serialisable value.
        paths: file paths (str or Path).
        options: the function's keyword arguments (JSON-serialisable).
        processes: worker count (>= 1).
        on_chunk: called with the number of files of each chunk answered (a progress bar's `update`).
    Returns:
        ({index: the function's value (through JSON)} for the files the workers answered, [indices they did
        not answer]): the caller runs the function on the second list itself.
    """
    pending: queue.SimpleQueue = queue.SimpleQueue()
    for start in range(0, len(paths), CHUNK):
        pending.put(list(range(start, min(start + CHUNK, len(paths)))))
    answers: queue.SimpleQueue = queue.SimpleQueue()
    workers: list[subprocess.Popen] = []
    stopping = threading.Event()

    def drive():
        try:
            worker = subprocess.Popen(
                _worker_command(function, options),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # a worker's failure shows as the caller's own check of its chunk
                env=_worker_env(),
            )
        except OSError:
            worker = None
        else:
            workers.append(worker)
        try:
            while not stopping.is_set():
                try:
                    chunk = pending.get_nowait()
                except queue.Empty:
                    return
                answer = None
                if worker is not None:
                    try:
                        names = [os.fsdecode(paths[i]) for i in chunk]
                        worker.stdin.write(json.dumps(names).encode() + b"\n")
                        worker.stdin.flush()
                        answer = json.loads(worker.stdout.readline() or b"null")
                    except (OSError, ValueError):
                        answer = None
                    if not isinstance(answer, list) or len(answer) != len(chunk):
                        worker.kill()  # dead, or out of step with its pipe: checked by the caller
                        worker, answer = None, None
                answers.put((chunk, answer))
        finally:
            if worker is not None:
                worker.stdin.close()

    threads = [threading.Thread(target=drive, daemon=True) for _ in range(max(1, processes))]
    for thread in threads:
        thread.start()
    results: dict = {}
    unanswered: list[int] = []
    finished = False
    try:
        while any(thread.is_alive() for thread in threads) or not answers.empty():
            try:
                chunk, answer = answers.get(timeout=0.1)
            except queue.Empty:
                continue
            if answer is None:
                unanswered.extend(chunk)
                continue
            results.update(zip(chunk, answer))
            if on_chunk is not None:
                on_chunk(len(chunk))
        finished = True
    finally:
        stopping.set()  # Ctrl-C or an error here: no more chunks, and the workers are killed, not awaited
        for worker in workers:
            try:
                worker.wait(timeout=2.0 if finished else 0)  # their stdin is closed: they are exiting
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    return results, unanswered


def _serve(function: str, options: dict) -> None:
    import importlib

    module, _, name = function.partition(":")
    apply = getattr(importlib.import_module(module), name)
    for line in sys.stdin.buffer:
        try:
            answer = [apply(path, **options) for path in json.loads(line)]
        except Exception as error:  # noqa: BLE001 - the caller re-runs the chunk itself and sees the error
            answer = {"error": f"{type(error).__name__}: {error}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _serve(sys.argv[1], json.loads(sys.argv[2]))
