"""Dynamic batching with TF Serving's parameters: concurrent requests coalesced into one model call.

`batching_parameters.txt` is TF Serving's file (`--enable_batching --batching_parameters_file=...`): the
text format of its `BatchingParameters` message (tensorflow_serving/servables/tensorflow/
session_bundle_config.proto), e.g.

    max_batch_size { value: 32 }
    batch_timeout_micros { value: 2000 }
    max_enqueued_batches { value: 100 }
    num_batch_threads { value: 2 }

The scheduler follows TF Serving's BasicBatchScheduler: a batch closes when it holds `max_batch_size`
images or `batch_timeout_micros` after its first request arrived, whichever comes first; a request never
splits across batches (a request over `max_batch_size` is refused, 400); at most `max_enqueued_batches`
batches wait, beyond that a request is answered 503 UNAVAILABLE at once; `num_batch_threads` batches run
at the same time. The `tensorflow-serving-api` package holds no session_bundle_config proto, so the few
lines are parsed here; fields TF Serving knows that this scheduler does not use are accepted and named in
the log, unknown ones are refused.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import re
import threading
import time
from pathlib import Path

from pipeline.core import errors, fileio

USED = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")
# BatchingParameters fields TF Serving has that this scheduler does without (shapes are fixed per signature
# here, so no padding; a request is never split).
IGNORED = (
    "allowed_batch_sizes",
    "pad_variable_length_inputs",
    "thread_pool_name",
    "enable_large_batch_splitting",
    "max_execution_batch_size",
)


class BatchingError(errors.UserError):
    """The batching parameters file cannot be used; the message names the line."""


class QueueFull(Exception):
    """The batch queue holds `max_enqueued_batches` batches: the request is refused (503)."""


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's defaults (session_bundle_config.proto / batching_session.h) where it has them."""

    max_batch_size: int = 32
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 100
    num_batch_threads: int = 1
    ignored: tuple[str, ...] = ()


_FIELD = re.compile(r"(\w+)\s*(?:\{\s*value\s*:\s*([^}\s]+)\s*\}|:\s*(\S+))")


def read_batching_parameters(path: Path) -> BatchingParameters:
    """Parses TF Serving's `batching_parameters.txt` (text-format BatchingParameters).

    Raises:
        BatchingError: unreadable file, unknown field (with a "did you mean"), non-integer or < 1 value.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise BatchingError(f"--batching-parameters {path}: cannot read ({fileio.os_reason(error)})") from None
    values, ignored = {}, []
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        match = _FIELD.fullmatch(line)
        if not match:
            raise BatchingError(
                f"{path}:{number}: cannot parse {line!r}; expected e.g. 'max_batch_size {{ value: 32 }}'"
            )
        name, wrapped, plain = match.groups()
        if name in IGNORED:
            ignored.append(name)
            continue
        if name not in USED:
            hint = errors.did_you_mean(name, USED + IGNORED)
            raise BatchingError(f"{path}:{number}: unknown field {name!r}{hint}; known: {', '.join(USED + IGNORED)}")
        raw = wrapped if wrapped is not None else plain
        try:
            value = int(raw)
        except ValueError:
            raise BatchingError(f"{path}:{number}: {name} must be an integer; received {raw!r}") from None
        if value < (0 if name == "batch_timeout_micros" else 1):
            raise BatchingError(f"{path}:{number}: {name} must be at least 1; received {value}")
        values[name] = value
    return BatchingParameters(**values, ignored=tuple(ignored))


class _Task:
    __slots__ = ("items", "future", "size")

    def __init__(self, items: list):
        self.items = items
        self.size = len(items)
        self.future: concurrent.futures.Future = concurrent.futures.Future()


class Batcher:
    """Coalesces tasks (lists of inputs) into batches and runs `run_batch(inputs) -> outputs` on them.

    `run_batch` takes the concatenated inputs of several tasks and returns a dict of arrays whose first axis
    follows the inputs; each task's future receives its own rows. When a merged batch fails, its tasks
    are run one by one, so one request's bad image fails that request only (as it would alone).
    """

    def __init__(self, run_batch, parameters: BatchingParameters, *, on_batch=None):
        self._run_batch = run_batch
        self.parameters = parameters
        self._on_batch = on_batch or (lambda size: None)
        self._tasks: collections.deque[_Task] = collections.deque()
        self._queued_images = 0
        self._condition = threading.Condition()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"batch-{index}", daemon=True)
            for index in range(parameters.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, items: list) -> concurrent.futures.Future:
        """Queues one request's inputs; raises QueueFull when `max_enqueued_batches` batches already wait."""
        task = _Task(items)
        limit = self.parameters.max_enqueued_batches * self.parameters.max_batch_size
        with self._condition:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if self._queued_images + task.size > limit:
                raise QueueFull(
                    f"The batch scheduling queue to which this task was submitted is full "
                    f"({self.parameters.max_enqueued_batches} batches of up to {self.parameters.max_batch_size} "
                    f"images waiting); retry later"
                )
            self._tasks.append(task)
            self._queued_images += task.size
            self._condition.notify()
        return task.future

    def _take_batch(self) -> list[_Task] | None:
        """Blocks until a batch closes (full or timed out); None when stopping with nothing left."""
        timeout = self.parameters.batch_timeout_micros / 1e6
        with self._condition:
            while not self._tasks:
                if self._stopping:
                    return None
                self._condition.wait()
            deadline = time.monotonic() + timeout
            while True:
                queued = 0
                for task in self._tasks:
                    if queued + task.size > self.parameters.max_batch_size:
                        break
                    queued += task.size
                full = queued >= self.parameters.max_batch_size or queued < self._queued_images
                remaining = deadline - time.monotonic()
                if full or remaining <= 0 or self._stopping:
                    break
                self._condition.wait(remaining)
            batch, size = [], 0
            while self._tasks and size + self._tasks[0].size <= self.parameters.max_batch_size:
                task = self._tasks.popleft()
                batch.append(task)
                size += task.size
            self._queued_images -= size
            if self._tasks:
                self._condition.notify()  # another thread can start on the rest
            return batch

    def _loop(self):
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            self._run(batch)

    def _run(self, batch: list[_Task]):
        inputs = [item for task in batch for item in task.items]
        try:
            outputs = self._run_batch(inputs)
        except Exception as error:  # noqa: BLE001  (handed to the requests)
            if len(batch) == 1:
                batch[0].future.set_exception(error)
            else:
                for task in batch:
                    self._run([task])
            return
        self._on_batch(len(inputs))
        start = 0
        for task in batch:
            task.future.set_result({name: values[start : start + task.size] for name, values in outputs.items()})
            start += task.size

    def stop(self, timeout: float = 30.0):
        """Runs what is queued, then ends the batch threads."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        for thread in self._threads:
            thread.join(timeout)


class DirectRunner:
    """No batching: each request is one model call on a pool of `num_threads`, with a bounded queue."""

    def __init__(self, run_batch, *, num_threads: int, max_queued: int, on_batch=None):
        self._run_batch = run_batch
        self._on_batch = on_batch or (lambda size: None)
        self._pool = concurrent.futures.ThreadPoolExecutor(num_threads, thread_name_prefix="predict")
        self._pending = 0
        self._max_queued = max_queued
        self._lock = threading.Lock()

    def submit(self, items: list) -> concurrent.futures.Future:
        with self._lock:
            if self._pending >= self._max_queued:
                raise QueueFull(f"{self._pending} requests are already waiting for the model; retry later")
            self._pending += 1
        future = self._pool.submit(self._call, items)
        return future

    def _call(self, items):
        try:
            outputs = self._run_batch(items)
            self._on_batch(len(items))
            return outputs
        finally:
            with self._lock:
                self._pending -= 1

    def stop(self, timeout: float = 30.0):
        self._pool.shutdown(wait=True)
