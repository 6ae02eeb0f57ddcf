"""Loopback test servers for the crawler tests (127.0.0.0/8 and ::1 only).

`serve(app, host)` runs an aiohttp app on a background thread's event loop, so that both
async tests and CLI tests (which run their own `asyncio.run`) can reach it.
`CountingListener` accepts TCP connections and counts them, answering nothing: the
forbidden-redirect tests assert it was never reached.
"""
from __future__ import annotations

import asyncio
import io
import socket
import threading
from contextlib import contextmanager
from typing import Iterator

import numpy as np
from aiohttp import web
from PIL import Image


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@contextmanager
def serve(app: web.Application, host: str = "127.0.0.1") -> Iterator[int]:
    """Serve `app` on host:(free port); yields the port."""
    lt = _LoopThread()

    async def start():
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)  # stalled handlers are cancelled
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]

    runner, port = lt.run(start())
    try:
        yield port
    finally:
        lt.run(runner.cleanup())
        lt.stop()


class CountingListener:
    """A TCP listener on `host` that counts connections (and never answers)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.connections = 0

    @contextmanager
    def running(self) -> Iterator[int]:
        lt = _LoopThread()

        async def on_connect(reader, writer):
            self.connections += 1
            writer.close()

        async def start():
            return await asyncio.start_server(on_connect, self.host, 0)

        server = lt.run(start())
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            async def stop():
                server.close()
                await server.wait_closed()
            lt.run(stop())
            lt.stop()


def can_bind(host: str, family: int = socket.AF_INET) -> bool:
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


def jpeg_bytes(width: int = 400, height: int = 300, seed: int = 0, quality: int = 90, **save) -> bytes:
    """A distinct smooth random image as JPEG (different seeds are not near-duplicates)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), "RGB")
    im = small.resize((width, height), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality, **save)
    return out.getvalue()


def noisy_jpeg(seed: int, size: int = 160) -> bytes:
    """A square of random pixels as JPEG: the costliest kind to store, so size bounds hold for
    real photos too; different seeds differ."""
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def image_app(files: dict[str, tuple[bytes, dict]]) -> tuple[web.Application, dict[str, int]]:
    """An app serving `files` {path: (body, headers)}; returns it and a per-path hit counter."""
    hits: dict[str, int] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        hits[request.path] = hits.get(request.path, 0) + 1
        if request.path not in files:
            return web.Response(status=404, text="not found")
        body, headers = files[request.path]
        return web.Response(body=body, headers={"Content-Type": "image/jpeg", **headers})

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    return app, hits
