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

A process that multiprocessing starts runs the parent's `__main__` script again, as
`__mp_main__`, unless its own `__main__` already names that script. The fork server was meant
to import it once for all its workers (preloading "__main__"), but CPython's forkserver looks
for the script's path under a key that the preparation data does not have ('main_path', not
'init_main_from_path'), so it never did, and each worker ran `explore`'s script (typer, rich,
pydantic) after its fork, before its first fetch. The workers need nothing from the script:
the server stands in a module that names it (`stand_in_main`), given in MAIN_ENV, and the
workers take it as run.
"""
from __future__ import annotations

import ctypes
import importlib.machinery
import json
import multiprocessing
import os
import signal
import sys
import types
from multiprocessing import forkserver, spawn
from multiprocessing.context import BaseContext

# What the server imports before it forks anything: the workers' environment, which then
# imports what they run (explorer.crawl.fetchers).
PRELOAD = ["explorer.crawl.worker_env"]
MAIN_ENV = "EXPLORE_FORKSERVER_MAIN"  # how multiprocessing names this process's __main__, as JSON
MAIN_KEYS = ("init_main_from_path", "init_main_from_name")


def available() -> bool:
    return "forkserver" in multiprocessing.get_all_start_methods()  # not on Windows


def context() -> BaseContext:
    """The multiprocessing context the fetch workers are made with (spawn without a fork server)."""
    if not available():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    # for the server, whenever it starts (also again, after it was killed); its other children inherit a name
    data = spawn.get_preparation_data("fetch worker")
    os.environ[MAIN_ENV] = json.dumps({key: data[key] for key in MAIN_KEYS if key in data})
    return ctx


def stand_in_main() -> None:
    """In the fork server: a `__main__` that names the command's script as this process's parent
    runs it (MAIN_ENV), so that the workers forked from here do not run it again."""
    try:
        names = json.loads(os.environ.get(MAIN_ENV) or "{}")
    except ValueError:
        return  # (the workers then run the script, as multiprocessing does)
    main = types.ModuleType("__mp_main__")
    if "init_main_from_path" in names:
        main.__file__ = names["init_main_from_path"]
    if "init_main_from_name" in names:
        main.__spec__ = importlib.machinery.ModuleSpec(names["init_main_from_name"], None)
    sys.modules["__main__"] = sys.modules["__mp_main__"] = main


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
