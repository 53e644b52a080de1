"""Where a sweep's tasks run: local processes (spawn), a Dask cluster (an address, or a LocalCluster),
this process (serial), or any ``concurrent.futures.Executor``; with the number of tasks kept in flight."""
from __future__ import annotations

import concurrent.futures as cf
import os

from ..errors import UserError


class InlineExecutor(cf.Executor):
    """Tasks run in this process, one after the other (debugging, tiny sweeps)."""

    def submit(self, fn, *args, **kwargs):
        f = cf.Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            f.set_exception(exc)
        return f


class Backend:
    """An executor, how many tasks to keep in flight (``slots``), and how to clean up.

    executor  'processes' (a spawn process pool), 'serial' (this process), 'dask' (``scheduler``: a
              ``distributed.Client(address).get_executor()``; without one, a Dask ``LocalCluster``), or a
              ``concurrent.futures.Executor`` you own. Tasks are small dicts: the executor pickles them
              between our own processes, but nothing a user receives is pickle.
    """

    def __init__(self, executor, scheduler, workers):
        import multiprocessing as mp
        self.kind = executor
        self.client = self.cluster = None
        self.owned = True
        self.parent_pid = None
        if isinstance(executor, cf.Executor):
            self.ex, self.owned, self.kind = executor, False, "custom"
            self.slots = workers or getattr(executor, "_max_workers", None) or os.cpu_count() or 1
        elif executor == "serial":
            self.ex, self.slots = InlineExecutor(), 1
        elif executor == "processes":
            self.slots = workers or os.cpu_count() or 1
            self._mp = mp.get_context("spawn")  # fork would copy zarr's event-loop thread and onnxruntime state
            self.ex = cf.ProcessPoolExecutor(max_workers=self.slots, mp_context=self._mp)
            self.parent_pid = os.getpid()
        elif executor == "dask":
            try:
                from distributed import Client, LocalCluster
            except ImportError:
                raise UserError("the dask executor needs dask.distributed: pip install 'dask[distributed]'") from None
            import logging
            if scheduler:
                try:
                    self.client = Client(scheduler, timeout="20s")
                except (OSError, TimeoutError) as exc:
                    raise UserError(f"cannot reach the Dask scheduler at {scheduler} ({type(exc).__name__}): "
                                    "check the address (tcp://HOST:8786) and that the scheduler runs") from None
                self.slots = workers or max(1, sum(self.client.nthreads().values()))
            else:
                n = workers or os.cpu_count() or 1
                self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                            dashboard_address=None, silence_logs=logging.ERROR)
                self.client = Client(self.cluster)
                self.slots = n
            self.ex = self.client.get_executor(pure=False)
            self.slots = self.slots * 2  # the scheduler queues; a little slack keeps every worker busy
        else:
            raise UserError(f"unknown executor {executor!r}: use processes, dask, serial or a concurrent.futures.Executor")

    def restart(self):
        """A fresh process pool after a worker died (the old one is unusable)."""
        self.ex.shutdown(wait=False, cancel_futures=True)
        self.ex = cf.ProcessPoolExecutor(max_workers=self.slots, mp_context=self._mp)

    def close(self):
        if self.owned:
            try:
                self.ex.shutdown(wait=True, cancel_futures=True)
            except TypeError:  # distributed's ClientExecutor has no cancel_futures
                self.ex.shutdown(wait=True)
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
