"""Imported by the fetch workers' fork server only (explorer/worker_server.py), before numpy.

The workers multiply no matrices, but numpy's OpenBLAS starts a thread per core when it is
loaded, and each spins for ~0.1 s of CPU before it sleeps: in the fork server, on cores the
crawl needs. One BLAS thread there, and in the workers forked from it, costs nothing.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
