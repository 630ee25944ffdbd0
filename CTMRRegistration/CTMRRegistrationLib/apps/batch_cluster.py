"""The Dask client of `ctmr-batch`: a LocalCluster of worker processes, or a running scheduler."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

ALLOWED_WORKER_DEATHS = 1  # a case whose worker dies is retried once, then recorded as crashed


@contextmanager
def open_client(scheduler: str | None, workers: int, memory_per_worker: str, dashboard_address: str) -> Iterator:
    """A distributed.Client on the scheduler at `scheduler`, else on a new LocalCluster of `workers` processes
    with one task thread each (a case's own threads are its child process's)."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_WORKER_DEATHS}):
        if scheduler:
            with Client(scheduler) as client:
                yield client
            return
        with (LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory_per_worker,
                           dashboard_address=dashboard_address) as cluster,
              Client(cluster) as client):
            yield client
