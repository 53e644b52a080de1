"""Sweeps: the product of targets x decoders x optimizers x noise models x seeds, run in parallel
(local processes or Dask), one resumable run store per task, an index of results (``xdream-ts sweep``).

    config.py     the TOML format (:func:`load_config`), targets as TargetSpecs, the tasks
    tasks.py      one task in a worker: build, run or resume, summarise
    executors.py  process pool, Dask (address or LocalCluster), serial
    runner.py     :func:`sweep`: skip finished tasks, keep the rest in flight, retry dead workers' tasks
    folder.py     index.json, run-store status, :class:`SweepResult`, :func:`load_sweep`
    cli.py        the ``sweep`` command
"""
from .cli import add_cli, cmd_sweep
from .config import (TARGET_KEYS, TOP_KEYS, benchmark_units, load_config, make_tasks, model_path, target_label,
                     target_spec, validate)
from .executors import Backend, InlineExecutor
from .folder import (CONFIG_FILE, INDEX_FILE, INDEX_FORMAT, RUNS_DIR, Index, SweepResult, load_sweep,
                     repair_commit_marker, store_attrs, store_status)
from .runner import drive, sweep
from .tasks import TaskLock, Watchdog, build_task, first_super_presentation, run_task, summarize, task_spec

__all__ = [
    "sweep", "load_sweep", "SweepResult", "load_config", "make_tasks", "validate", "target_spec", "task_spec",
    "target_label", "model_path", "benchmark_units", "build_task", "run_task", "summarize",
    "first_super_presentation", "store_status", "store_attrs", "repair_commit_marker", "Index", "Backend",
    "InlineExecutor", "TaskLock", "Watchdog", "drive", "add_cli", "cmd_sweep", "TOP_KEYS", "TARGET_KEYS",
    "INDEX_FORMAT", "INDEX_FILE", "CONFIG_FILE", "RUNS_DIR",
]
