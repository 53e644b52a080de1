"""The lines every benchmark report opens with: when, on what machine and software, at which commit.

Imported by the benchmark scripts beside it (``from machine import machine_lines``), which put this folder
on ``sys.path`` when run as scripts."""
from __future__ import annotations

import datetime as dt
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sh(cmd: str) -> str:
    """A shell command's stdout, or why it could not run (a report line, never an exception)."""
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception as e:  # noqa: BLE001
        return f"({e})"


def machine_lines(torch: bool = False, lscpu: bool = False) -> list[str]:
    """Markdown bullets: date (UTC), ``nproc`` (with OMP_NUM_THREADS unset), platform, Python, onnxruntime
    (and torch), optionally ``lscpu | head`` as a code block, and the git commit."""
    import onnxruntime
    versions = f"Python {platform.python_version()}"
    if torch:
        import torch as _torch
        versions += f", torch {_torch.__version__}"
    versions += f", onnxruntime {onnxruntime.__version__} (1 thread{', torch 1 thread' if torch else ''})"
    lines = [f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
             f"- machine: `nproc` = {sh('env -u OMP_NUM_THREADS nproc')}, no GPU; {platform.platform()}; {versions}; "
             "the 2 cores were shared with other jobs, so wall times are indicative only"]
    if lscpu:
        lines += ["- `lscpu | head`:", "", "```", sh("lscpu | head"), "```", ""]
    return lines + [f"- git: {sh('git -C ' + str(REPO) + ' rev-parse --short HEAD')}"]
