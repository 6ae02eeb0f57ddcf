"""Imported by the fetch workers' fork server only (explorer/crawl/worker_server.py), before numpy:
importing it ties the importing process's life to its parent's.

The workers multiply no matrices, but numpy's OpenBLAS starts a thread per core when it is
loaded, and each spins for ~0.1 s of CPU before it sleeps: in the fork server, on cores the
crawl needs. One BLAS thread there, and in the workers forked from it, costs nothing.

The server dies with `explore` (SIGKILL from the kernel): its own shutdown waits for the end
of a pipe that every worker holds a copy of, which a worker busy inside a decoder never
closes, and each worker dies with the server (worker_server.die_with_parent). The request is
made before the server forks anything; if `explore` died before it, that pipe ends the
server, as no worker exists yet. `SERVER_PID`, inherited by the workers, is their parent's pid.
The server's `__main__` is a stand-in for the command's script, which the workers do not run
(worker_server.stand_in_main).

Last, the server imports what the workers run and freezes those objects out of the garbage
collector's sight (`gc.freeze`, as Python's documentation advises before fork): a worker's
collections then never walk them, nor copy the pages they share with the server.
"""
import gc
import importlib
import os

from explorer.crawl import worker_server
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
SERVER_PID = os.getpid()
worker_server.die_with_parent()
worker_server.stand_in_main()

importlib.import_module("explorer.crawl.fetchers")  # what the workers run, after the settings above

gc.freeze()
