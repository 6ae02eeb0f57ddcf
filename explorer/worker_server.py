"""The fork server that the crawl's fetch workers start from (multiprocessing "forkserver").

A worker spawned from scratch imports aiohttp, numpy, Pillow and the rest again (~0.3 s of
CPU each, before its first fetch). The fork server imports them once, single-threaded and
with no event loop running, then forks each worker ready to fetch, which is also how a worker
that died is replaced within milliseconds. `start()` launches it and returns at once: called
first thing by a command (`explore fetch`), the server's imports run while the command does
its own. This module imports nothing heavy, so that it can be called that early.
"""
from __future__ import annotations

import multiprocessing
from multiprocessing import forkserver
from multiprocessing.context import BaseContext

# What the server imports before it forks anything. "__main__" is the command's own script
# (cli.py or the `explore` entry point), which a forked worker would otherwise run again;
# multiprocessing imports it first, then the rest in order.
PRELOAD = ["__main__", "explorer.worker_env", "explorer.fetchers"]


def available() -> bool:
    return "forkserver" in multiprocessing.get_all_start_methods()  # not on Windows


def context() -> BaseContext:
    """The multiprocessing context the fetch workers are made with (spawn without a fork server)."""
    if not available():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start() -> None:
    """Launch the fork server if it is not running (it then imports in the background)."""
    if available():
        context()
        forkserver.ensure_running()
