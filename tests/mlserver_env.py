"""MLServer in its own virtual environment, and a real MLServer process for the integration test.

MLServer pins heavy dependencies (its own fastapi, pydantic, grpcio, pandas, ...): it must never be
installed into xdream_ts's environment. ``ensure_mlserver()`` creates ``.venv-mlserver`` beside the
repository's files on first use (``python -m venv`` + ``pip install`` of the pinned REQUIREMENTS; a few
minutes, ~430 MB) and reuses it afterwards while it still imports and its pins have not changed.
``XDREAM_TS_MLSERVER_VENV`` puts it elsewhere. Run this file to build it ahead of the tests::

    python tests/mlserver_env.py
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("XDREAM_TS_MLSERVER_VENV", REPO / ".venv-mlserver"))
# Checked to install together on Python 3.11 from PyPI (2026-05): mlserver 1.7.1 is the newest release;
# onnx only to expose hidden tensors.
REQUIREMENTS = ["mlserver==1.7.1", "onnxruntime==1.31.1", "onnx==1.23.2", "numpy==2.4.6"]
RUNTIME = REPO / "adapters" / "mlserver_runtime.py"


class IndexUnreachable(RuntimeError):
    """The package index cannot be reached: the integration test skips, saying so."""


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _works(venv: Path) -> bool:
    marker = venv / ".xdream-ts-requirements"
    if not _python(venv).exists() or not marker.exists() or marker.read_text() != "\n".join(REQUIREMENTS):
        return False
    probe = subprocess.run([str(_python(venv)), "-c", "import mlserver, onnxruntime, onnx, numpy"],
                           capture_output=True, timeout=300)
    return probe.returncode == 0


def ensure_mlserver(venv: Path = VENV, log=print) -> Path:
    """The venv's folder, with MLServer installed (built on first use; a file lock serialises builders)."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    # The lock lives in the temp folder, not beside the venv: nothing untracked appears in the work tree.
    key = hashlib.sha1(str(venv.resolve()).encode()).hexdigest()[:12]
    with open(Path(tempfile.gettempdir()) / f"xdream-ts-mlserver-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _works(venv):
            return venv
        pip_env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        with tempfile.TemporaryDirectory() as tmp:
            # Reachability first, with the smallest download: a failure here means "offline", not "broken".
            probe = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
                                    REQUIREMENTS[0]], capture_output=True, text=True, env=pip_env, timeout=600)
            if probe.returncode != 0:
                tail = " ".join((probe.stderr or probe.stdout).strip().splitlines()[-1:])
                raise IndexUnreachable(f"package index unreachable: `pip download {REQUIREMENTS[0]}` failed ({tail})")
        log(f"creating {venv} with {' '.join(REQUIREMENTS)} (first use; a few minutes)")
        if venv.exists():
            shutil.rmtree(venv)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=600)
        (venv / ".gitignore").write_text("*\n")  # never committed, even before .gitignore names it
        result = subprocess.run([str(_python(venv)), "-m", "pip", "install", "-q", *REQUIREMENTS],
                                capture_output=True, text=True, env=pip_env, timeout=1800)
        if result.returncode != 0:
            raise RuntimeError(f"installing {REQUIREMENTS} into {venv} failed:\n{result.stdout[-3000:]}\n"
                               f"{result.stderr[-3000:]}")
        (venv / ".xdream-ts-requirements").write_text("\n".join(REQUIREMENTS))
        if not _works(venv):
            raise RuntimeError(f"{venv} was built but does not import mlserver, onnxruntime and onnx")
        return venv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_model(root: Path, name: str, extra: dict, onnx_path: Path | None = None) -> Path:
    """A model folder under ``root``: the runtime file, the model, model-settings.json."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(RUNTIME, folder / "mlserver_runtime.py")
    settings = {"name": name, "implementation": "mlserver_runtime.XdreamRuntime", "parameters": {"extra": extra}}
    if onnx_path is not None:
        shutil.copy(onnx_path, folder / "model.onnx")
        settings["parameters"]["uri"] = "./model.onnx"
    (folder / "model-settings.json").write_text(json.dumps(settings, indent=2))
    return folder


@contextlib.contextmanager
def mlserver(venv: Path, root: Path, models: list[str], startup_s: float = 240.0):
    """Start ``mlserver start ROOT`` on free 127.0.0.1 ports; yield its HTTP URL once every model is ready."""
    import httpx

    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    (root / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port,
        "metrics_endpoint": None,  # no Prometheus server
        "parallel_workers": 0,     # inference in the server process: no worker pool on a 2-core machine
        "debug": False, "load_models_at_startup": True,
    }))
    log_path = root / "mlserver.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVER_")}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(venv / "bin" / "mlserver"), "start", str(root)], cwd=root, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + startup_s
        pending = list(models)
        with httpx.Client(timeout=2.0) as client:
            while pending:
                if proc.poll() is not None:
                    raise RuntimeError(f"mlserver exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mlserver not ready after {startup_s:.0f} s:\n{log_path.read_text()[-4000:]}")
                try:
                    ok = client.get(f"{url}/v2/health/ready").status_code == 200
                    if ok:
                        pending = [m for m in pending
                                   if client.get(f"{url}/v2/models/{m}/ready").status_code != 200]
                except httpx.TransportError:
                    pass
                if pending:
                    time.sleep(0.5)
        yield url
    finally:
        # Its own session (start_new_session): signal the group, so no child of it outlives the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


if __name__ == "__main__":
    try:
        print(ensure_mlserver())
    except IndexUnreachable as exc:
        sys.exit(str(exc))
