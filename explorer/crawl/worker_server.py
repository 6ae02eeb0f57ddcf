"""The fork server that the crawl's fetch workers start from (multiprocessing "forkserver").

A worker spawned from scratch imports aiohttp, numpy, Pillow and the rest again (~0.3 s of
CPU each, before its first fetch). The fork server imports them once, single-threaded and
with no event loop running, then forks each worker ready to fetch, which is also how a worker
that died is replaced within milliseconds. `start()` launches it and returns at once: called
first thing by a command (`explore fetch`), the server's imports run while the command does
its own. This module imports nothing heavy, so that it can be called that early.

When `explore` dies, even by kill -9, its workers die with it, also one busy inside a decoder
that reads no pipe: the kernel kills the server when `explore` exits and each worker when the
server exits (`die_with_parent`, asked for by explorer/crawl/worker_env.py and `worker_main`). That
signal is tied to the *thread* that started the process: a server started from a thread that
ends before `explore` dies with it, and the workers with it; their URLs get `worker_lost` and
the next fetch starts a new server (as after the OOM killer).
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from multiprocessing import forkserver
from multiprocessing.context import BaseContext

# What the server imports before it forks anything. "__main__" is the command's own script
# (cli.py or the `explore` entry point), which a forked worker would otherwise run again;
# multiprocessing imports it first, then the rest in order.
PRELOAD = ["__main__", "explorer.crawl.worker_env", "explorer.crawl.fetchers"]


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


PR_SET_PDEATHSIG = 1  # prctl(2)


def die_with_parent(parent_pid: int | None = None) -> None:
    """Have the kernel SIGKILL this process when its parent exits (Linux only). A parent that
    died before the request (`parent_pid`, when given, is no longer our parent) left us
    orphaned with no signal to come: exit now."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # (a seccomp filter, say): the pipes' ends still stop idle processes
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)
