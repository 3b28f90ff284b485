"""The server's Prometheus metrics (prometheus_client, one registry per server), served at `/metrics`
(KServe's path) and `/monitoring/prometheus/metrics` (TF Serving's) in Prometheus' text format:

    pipeline_serve_requests_total{protocol, status}                  every HTTP request answered
    pipeline_serve_request_duration_seconds{protocol} (histogram)    predict / infer requests, body to answer
    pipeline_serve_batch_size (histogram)                            images per model call (`serving_default`)
    pipeline_serve_model_calls_total, pipeline_serve_images_total    the same calls, as counters

`protocol` is "v1" (TF Serving's REST API), "v2" (Open Inference Protocol) or "other" (metrics, unknown
paths); `status` the HTTP status code.
"""

from __future__ import annotations

import threading

import prometheus_client

# Latency buckets (seconds): the default ones of prometheus_client from 5 ms up, with 1 and 2 ms added,
# since a batched LeNet request answers in a few milliseconds.
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST


class ServingMetrics:
    """Counters and histograms of one server; the recording methods are safe from any thread."""

    def __init__(self):
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        self._requests = prometheus_client.Counter(
            "pipeline_serve_requests", "HTTP requests answered", ["protocol", "status"], registry=self.registry
        )
        self._latency = prometheus_client.Histogram(
            "pipeline_serve_request_duration_seconds",
            "predict/infer requests: from the request to the answer, in seconds",
            ["protocol"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._batch_size = prometheus_client.Histogram(
            "pipeline_serve_batch_size", "images per model call", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self._model_calls = prometheus_client.Counter(
            "pipeline_serve_model_calls", "model calls of serving_default", registry=self.registry
        )
        self._images = prometheus_client.Counter(
            "pipeline_serve_images", "images in those model calls", registry=self.registry
        )
        self._children = {}  # (protocol, status) -> the labelled counter (labels() costs a lock and a lookup)
        self._lock = threading.Lock()
        self.model_calls = 0  # plain totals for the log line at shutdown
        self.images = 0

    def record_batch(self, size: int) -> None:
        """One model call of `serving_default` on `size` images."""
        self._batch_size.observe(size)
        self._model_calls.inc()
        self._images.inc(size)
        with self._lock:
            self.model_calls += 1
            self.images += size

    def record_request(self, protocol: str, status: int, seconds: float | None = None) -> None:
        """An answered request; `seconds` for predict/infer requests (the latency histogram)."""
        key = (protocol, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._requests.labels(protocol=protocol, status=str(status))
        child.inc()
        if seconds is not None:
            self._latency.labels(protocol=protocol).observe(seconds)

    def exposition(self) -> bytes:
        """The text format (version 0.0.4) of every metric."""
        return prometheus_client.generate_latest(self.registry)
