"""The batch scheduler and TF Serving's batching_parameters.txt, in-process (no model, no TensorFlow)."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import numpy as np
import pytest

from pipeline.serving import batching


def test_parameters_file_in_tf_serving_format(tmp_path):
    path = tmp_path / "batching_parameters.txt"
    path.write_text(
        "# TF Serving's example\nmax_batch_size { value: 32 }\nbatch_timeout_micros { value: 5000 }\n"
        "max_enqueued_batches { value: 7 }\nnum_batch_threads { value: 2 }\npad_variable_length_inputs: true\n"
    )
    parameters = batching.read_batching_parameters(path)
    assert parameters == batching.BatchingParameters(
        max_batch_size=32,
        batch_timeout_micros=5000,
        max_enqueued_batches=7,
        num_batch_threads=2,
        ignored=("pad_variable_length_inputs",),
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("max_batch_size { value: 0 }", "batching_parameters.txt:1: max_batch_size must be at least 1; received 0"),
        ("max_batch_size { value: big }", "max_batch_size must be an integer; received 'big'"),
        ("num_batch_thread { value: 2 }", "unknown field 'num_batch_thread' (did you mean 'num_batch_threads'?)"),
        ("max_batch_size = 3", "cannot parse 'max_batch_size = 3'"),
    ],
)
def test_parameters_file_errors_name_the_line(tmp_path, text, message):
    path = tmp_path / "batching_parameters.txt"
    path.write_text(text + "\n")
    with pytest.raises(batching.BatchingError, match=None) as caught:
        batching.read_batching_parameters(path)
    assert message in str(caught.value)


def doubling(calls):
    def run_batch(values):
        calls.append(list(values))
        return {"twice": np.array(values) * 2}

    return run_batch


def test_concurrent_tasks_share_a_model_call_and_get_their_own_rows():
    calls = []
    parameters = batching.BatchingParameters(max_batch_size=8, batch_timeout_micros=200_000, num_batch_threads=1)
    batcher = batching.Batcher(doubling(calls), parameters)
    futures = [batcher.submit([index, index + 100]) for index in range(4)]
    results = [future.result(timeout=10) for future in futures]
    batcher.stop()
    assert calls == [[0, 100, 1, 101, 2, 102, 3, 103]]  # one full batch of 8, closed before the timeout
    for index, result in enumerate(results):
        assert result["twice"].tolist() == [2 * index, 2 * index + 200]


def test_a_batch_closes_at_its_timeout_and_a_task_never_splits():
    calls = []
    parameters = batching.BatchingParameters(max_batch_size=4, batch_timeout_micros=50_000, num_batch_threads=1)
    batcher = batching.Batcher(doubling(calls), parameters)
    started = time.monotonic()
    first, second = batcher.submit([1, 2, 3]), batcher.submit([4, 5])
    assert first.result(timeout=10)["twice"].tolist() == [2, 4, 6]
    assert second.result(timeout=10)["twice"].tolist() == [8, 10]
    batcher.stop()
    assert calls == [[1, 2, 3], [4, 5]]
    assert time.monotonic() - started >= 0.05  # the second waited out its batch timeout


def test_full_queue_refuses_at_once():
    release = threading.Event()

    def slow(values):
        release.wait(10)
        return {"same": np.array(values)}

    parameters = batching.BatchingParameters(max_batch_size=2, max_enqueued_batches=1, num_batch_threads=1)
    batcher = batching.Batcher(slow, parameters)
    running = batcher.submit([1, 2])  # taken by the batch thread, which then blocks in the model
    deadline = time.monotonic() + 5
    while batcher._queued_images and time.monotonic() < deadline:
        time.sleep(0.01)
    queued = batcher.submit([3, 4])  # fills the one batch allowed to wait
    with pytest.raises(batching.QueueFull, match="queue to which this task was submitted is full"):
        batcher.submit([5])
    release.set()
    assert running.result(timeout=10)["same"].tolist() == [1, 2]
    assert queued.result(timeout=10)["same"].tolist() == [3, 4]
    batcher.stop()


def test_a_failing_request_fails_alone():
    def picky(values):
        if any(value < 0 for value in values):
            raise ValueError("negative")
        return {"same": np.array(values)}

    parameters = batching.BatchingParameters(max_batch_size=8, batch_timeout_micros=200_000, num_batch_threads=1)
    batcher = batching.Batcher(picky, parameters)
    good, bad, other = batcher.submit([1]), batcher.submit([-1]), batcher.submit([2, 3])
    assert good.result(timeout=10)["same"].tolist() == [1]
    assert other.result(timeout=10)["same"].tolist() == [2, 3]
    with pytest.raises(ValueError, match="negative"):
        bad.result(timeout=10)
    batcher.stop()


def test_direct_runner_bounds_its_queue():
    release = threading.Event()
    runner = batching.DirectRunner(lambda values: release.wait(10) and {"n": len(values)}, num_threads=1, max_queued=2)
    futures = [runner.submit([1]), runner.submit([2])]
    with pytest.raises(batching.QueueFull, match="2 requests are already waiting"):
        runner.submit([3])
    release.set()
    assert [future.result(timeout=10) for future in futures] == [{"n": 1}, {"n": 1}]
    assert isinstance(futures[0], concurrent.futures.Future)
    runner.stop()
