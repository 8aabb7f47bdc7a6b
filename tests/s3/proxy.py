"""A fault-injecting HTTP/1.1 proxy on 127.0.0.1, between the S3 client under test and moto.

Each request, with probability `rate`, meets one fault (chosen uniformly from `faults`):
    503      a SlowDown error, never forwarded
    500      an InternalError, never forwarded
    reset    the client's connection is reset (RST): before forwarding, or after the server
             processed the request (the client cannot know which)
    delay    the response is held back 0.05-0.4 s
    cut      half of the request body reaches the server, then both connections drop
    corrupt  one byte of the request body is flipped on its way (the server stores it)
Tests may also queue faults for the next requests of a method (`queue`). Everything is bounded:
it listens on loopback only, forwards only to the one upstream port, holds at most
MAX_CONNECTIONS connections, and stops itself after `max_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections import Counter, deque

FAULTS = ("503", "500", "reset", "delay", "cut", "corrupt")
MAX_CONNECTIONS = 256

_ERRORS = {
    "503": ("503 Slow Down", "SlowDown", "Please reduce your request rate."),
    "500": ("500 Internal Server Error", "InternalError", "We encountered an internal error."),
}


def _error_response(kind: str, head_only: bool) -> bytes:
    status, code, message = _ERRORS[kind]
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head if head_only else head + body


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    result = {}
    for line in lines:
        if ":" in line:
            key, value = line.split(":", 1)
            result[key.strip().lower()] = value.strip()
    return result


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes | None:
    """The body as raw bytes (chunked kept as sent); None: delimited by the connection's end."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raw = bytearray()
        while True:
            line = await reader.readuntil(b"\r\n")
            raw += line
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                raw += await reader.readuntil(b"\r\n")  # no trailers from these clients
                return bytes(raw)
            raw += await reader.readexactly(size + 2)
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    return None


def _without_expect(head: bytes) -> bytes:
    lines = head.split(b"\r\n")
    return b"\r\n".join(line for line in lines if not line.lower().startswith(b"expect:"))


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    def __init__(
        self,
        upstream_port: int,
        rate: float = 0.0,
        faults: tuple[str, ...] = FAULTS,
        seed: int = 0,
        max_seconds: float = 300.0,
    ) -> None:
        assert all(f in FAULTS for f in faults)
        self.upstream_port = upstream_port
        self.rate = rate
        self.faults = faults
        self.max_seconds = max_seconds
        self.counts: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._queued: deque[tuple[str, str]] = deque()  # (method, fault)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._connections = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        assert self.port, "fault proxy did not start"
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def queue(self, method: str, fault: str) -> None:
        """The next request with this method meets this fault, whatever the rate."""
        with self._lock:
            self._queued.append((method.upper(), fault))

    def _choose(self, method: str) -> str | None:
        with self._lock:
            for i, (m, fault) in enumerate(self._queued):
                if m == method:
                    del self._queued[i]
                    return fault
            if self.rate and self._random.random() < self.rate:
                return self._random.choice(self.faults)
        return None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self.max_seconds)
            server.close()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def stop(self) -> None:
        if self._stopped is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(15)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._connections >= MAX_CONNECTIONS:
            writer.close()
            return
        self._connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                method = head.split(b" ", 1)[0].decode("latin-1").upper()
                headers = _headers(head)
                if headers.get("expect", "").lower() == "100-continue":
                    # Answered here, so the whole body is in hand before any fault is chosen.
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await writer.drain()
                    head = _without_expect(head)
                body = await _read_body(reader, headers) or b""
                fault = self._choose(method)
                if fault:
                    with self._lock:
                        self.counts[fault] += 1
                with self._lock:
                    self.counts["requests"] += 1
                if fault in _ERRORS:
                    writer.write(_error_response(fault, method == "HEAD"))
                    await writer.drain()
                    continue
                before = self._random.random() < 0.5
                if fault == "reset" and before:
                    _reset(writer)
                    return
                if upstream is None:
                    upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
                up_reader, up_writer = upstream
                if fault == "cut" and len(body) > 1:
                    up_writer.write(head + body[: len(body) // 2])
                    await up_writer.drain()
                    _reset(up_writer)
                    _reset(writer)
                    return
                if fault == "corrupt" and body:
                    spot = self._random.randrange(len(body))
                    body = body[:spot] + bytes([body[spot] ^ 0xFF]) + body[spot + 1 :]
                up_writer.write(head + body)
                await up_writer.drain()
                response_head = await up_reader.readuntil(b"\r\n\r\n")
                status = int(response_head.split(b" ", 2)[1])
                response_headers = _headers(response_head)
                no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
                response_body = b"" if no_body else await _read_body(up_reader, response_headers)
                close_after = response_body is None
                if response_body is None:
                    response_body = await up_reader.read()
                if fault == "reset":
                    _reset(writer)
                    return
                if fault == "delay":
                    await asyncio.sleep(self._random.uniform(0.05, 0.4))
                writer.write(response_head + response_body)
                await writer.drain()
                if close_after or response_headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            self._connections -= 1
            self._tasks.discard(task)
            if upstream is not None:
                upstream[1].transport.abort()
            writer.transport.abort()
