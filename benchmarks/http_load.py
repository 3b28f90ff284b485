"""A lean HTTP load client for benchmarks/serving.py, run as its own process so it does not share a GIL with
the caller (on a 2-core machine the client competes with the server for the same cores: it must be cheap).

    .venv/bin/python -m benchmarks.http_load --port P --path /v1/models/m:predict --bodies FILE \
        --requests 2000 --concurrency 8

`--bodies FILE`: one request body per line (JSON bodies have no raw newlines), sent in rotation. Each of
`--concurrency` connections is kept alive and sends one request at a time (no pipelining); a response is
read by its status line and Content-Length only. asyncio on uvloop (in uvicorn[standard]): about 70 us of
client CPU per request here, against about 180 us for http.client in 8 threads (the former client; 2,000
MNIST requests at concurrency 8, 2026-12-02). Prints one JSON object:
{"wall": s, "latencies": [s, ...], "statuses": {"200": n, ...}, "client_cpu": s}. Every request has a 30 s
timeout and the whole run a `--max-seconds` bound.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time

HEADER_END = b"\r\n\r\n"


def request_bytes(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(HEADER_END)
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    if length:
        await reader.readexactly(length)
    return status


async def run(*, port: int, requests: list[bytes], concurrency: int, max_seconds: float) -> dict:
    latencies, statuses = [], collections.Counter()
    pending = iter(range(len(requests)))
    deadline = time.monotonic() + max_seconds

    async def connection():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for index in pending:
                if time.monotonic() > deadline:
                    statuses["not sent (time bound)"] += 1
                    continue
                started = time.perf_counter()
                try:
                    writer.write(requests[index])
                    status = await asyncio.wait_for(_read_response(reader), 30)
                except (TimeoutError, OSError, asyncio.IncompleteReadError) as error:
                    statuses[type(error).__name__] += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies.append(time.perf_counter() - started)
                statuses[status] += 1
        finally:
            writer.close()

    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return {
        "wall": time.perf_counter() - started,
        "latencies": latencies,
        "statuses": {str(key): value for key, value in statuses.items()},
        "client_cpu": time.process_time() - cpu,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--bodies", required=True, help="one request body per line")
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=300)
    args = parser.parse_args(argv)
    with open(args.bodies, "rb") as file:
        bodies = [line.rstrip(b"\n") for line in file if line.strip()]
    prepared = [request_bytes(args.path, body) for body in bodies]
    requests = [prepared[index % len(prepared)] for index in range(args.requests)]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # plain asyncio: a slower client, the same figures otherwise
        runner = asyncio.run
    result = runner(run(port=args.port, requests=requests, concurrency=args.concurrency, max_seconds=args.max_seconds))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
