"""What scoring over the network costs, and what faults cost: RemoteScorer against a real MLServer and a
flaky stub server, and the lab-rig service driven by the reference client.

    nice -n 10 python experiments/remote_bench.py [--out experiments/results/remote.md]

Needs .venv-mlserver (built on first use by tests/mlserver_env.py, a few minutes).
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the MLServer venv helper, the tiny model and the stub server

import mlserver_env  # noqa: E402
from stub_server import StubServer  # noqa: E402
from test_mlserver import tiny_model  # noqa: E402

import xdream_ts  # noqa: E402
from xdream_ts.adapters.onnx import OnnxScorer, Target  # noqa: E402
from xdream_ts.adapters.remote import RemoteScorer  # noqa: E402
from xdream_ts.adapters.simulated import SimulatedNeuron  # noqa: E402
from xdream_ts.decoders.basis import BasisDecoder  # noqa: E402

L = 500


def best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_mlserver(tmp: Path, lines: list[str]) -> None:
    venv = mlserver_env.ensure_mlserver()
    model = tiny_model(tmp / "tiny.onnx", length=L)
    root = tmp / "models"
    mlserver_env.add_model(root, "tiny", {"kind": "onnx", "tensor": "block2/conv", "position": "center"}, model)
    x = BasisDecoder(L, n_basis=16)(np.random.default_rng(0).standard_normal((512, 16)))
    local = OnnxScorer(model, Target("block2/conv", 1, "center"), providers="cpu")
    with mlserver_env.mlserver(venv, root, ["tiny"]) as url:
        lines += ["## Scoring 512 series of length 500 (tiny conv model, hidden tensor `block2/conv`, unit 1)", "",
                  "| scorer | max_batch | requests | seconds (best of 3) | series/s | ms per request |",
                  "|---|---:|---:|---:|---:|---:|"]
        t = best_of(lambda: local(x))
        lines.append(f"| local OnnxScorer | - | - | {t:.3f} | {512 / t:,.0f} | - |")
        for mb in (1, 8, 64, 256):
            sc = RemoteScorer(url, model="tiny", unit=1, max_batch=mb)
            sc(x[:4])  # warm the connection and the metadata
            r0 = sc.requests
            t = best_of(lambda: sc(x))
            req = (sc.requests - r0) // 3
            lines.append(f"| RemoteScorer -> MLServer 1.7.1 | {mb} | {req} | {t:.3f} | {512 / t:,.0f} | {1000 * t / req:.1f} |")
            np.testing.assert_allclose(sc(x[:64]), local(x[:64]), rtol=1e-5, atol=1e-5)
            sc.close()
        lines.append("")
        budget = 1000
        t0 = time.perf_counter()
        a = xdream_ts.run(BasisDecoder(L, n_basis=16), local, "genetic", budget=budget, seed=0, progress=False)
        t_local = time.perf_counter() - t0
        sc = RemoteScorer(url, model="tiny", unit=1)
        t0 = time.perf_counter()
        b = xdream_ts.run(BasisDecoder(L, n_basis=16), sc, "genetic", budget=budget, seed=0, progress=False,
                          store=tmp / "remote.zarr")
        t_remote = time.perf_counter() - t0
        diff = float(np.nanmax(np.abs(a.objective - b.objective)))
        lines += [f"## A whole search: genetic, budget {budget}, population 20, in-memory vs zarr store", "",
                  "| target | seconds | best score | max abs. difference of every told score vs local |",
                  "|---|---:|---:|---:|",
                  f"| local OnnxScorer | {t_local:.2f} | {a.best_score:.6g} | - |",
                  f"| MLServer via RemoteScorer (one request per generation) | {t_remote:.2f} | {b.best_score:.6g} | {diff:.1e} |", ""]


def bench_faults(tmp: Path, lines: list[str]) -> None:
    neuron = SimulatedNeuron(length=L, seed=0)
    rng = np.random.default_rng(0)
    budget, max_batch = 2000, 10
    n_requests = budget // max_batch * 3
    lines += [f"## Faults: budget {budget}, batches of {max_batch} ({budget // max_batch} batches), stub server on "
              "127.0.0.1, backoff 0.05 s", "",
              "| fault mix per request | wall s | requests | retries | series lost (NaN) | best score vs clean run |",
              "|---|---:|---:|---:|---:|---:|"]
    clean_best = None
    for label, mix in [("none", {}), ("10% HTTP 503", {("status", 503): 0.10}),
                       ("5% dropped connection", {"drop": 0.05}),
                       ("10% 503 + 5% drop + 2% malformed + 2% wrong shape",
                        {("status", 503): 0.10, "drop": 0.05, "malformed": 0.02, "wrong_shape": 0.02})]:
        actions, probs = list(mix), list(mix.values())
        script = []
        for u in rng.random(n_requests):
            acc, pick = 0.0, "ok"
            for a, p in zip(actions, probs):
                acc += p
                if u < acc:
                    pick = a
                    break
            script.append(pick)
        with StubServer(neuron, script=script) as srv:
            sc = RemoteScorer(srv.url, model="neuron", max_batch=max_batch, backoff=0.05, timeout=(2, 5))
            t0 = time.perf_counter()
            r = xdream_ts.run(BasisDecoder(L, n_basis=16), sc, "genetic", budget=budget, seed=0, progress=False,
                              store=tmp / f"fault-{len(lines)}.zarr")
            wall = time.perf_counter() - t0
        clean_best = clean_best or r.best_score
        lines.append(f"| {label} | {wall:.2f} | {sc.requests} | {sc.retries} | {sc.missing} | "
                     f"{r.best_score / clean_best:.3f} |")
    lines.append("")


def bench_rig(tmp: Path, lines: list[str]) -> None:
    import importlib.util
    import socket

    import httpx

    spec = importlib.util.spec_from_file_location("rig_client", REPO / "experiments" / "rig_client.py")
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lines += ["## Lab-rig service (uvicorn subprocess) driven by experiments/rig_client.py, no presentation delay", "",
              "| budget | repeats | block | length | drops/dups/late | wall s | presentations/s | missing | duplicates | late |",
              "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for block, drop in ((20, 0.0), (20, 0.05)):
        out = tmp / f"rig-{block}-{drop}.zarr"
        cfg = tmp / "rig.toml"
        cfg.write_text(f'decoder = "basis:16"\nlength = {L}\noptimizer = "genetic"\nbudget = 1000\nrepeats = 2\n'
                       f'seed = 0\nout = "{out}"\ntimeout_s = 0.5\nblock_size = {block}\nport = {port}\n')
        proc = subprocess.Popen([sys.executable, "-m", "xdream_ts", "rig", "--config", str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            t0 = time.perf_counter()
            counts = client.drive(f"http://127.0.0.1:{port}", L, block_size=block, drop=drop, duplicate=drop,
                                  late=drop, delay=(0.0, 0.0), seed=0)
            wall = time.perf_counter() - t0
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        c = counts["service"]["counters"]
        lines.append(f"| 1000 | 2 | {block} | {L} | {drop:.0%} each | {wall:.2f} | {1000 / wall:.0f} | {c['missing']} | "
                     f"{c['duplicates']} | {c['late']} |")
    lines.append("")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "experiments" / "results" / "remote.md"))
    args = ap.parse_args()
    lines = ["# Remote scoring and the lab rig: what the network and faults cost", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with other jobs), "
             f"Python {platform.python_version()}, Linux. Date: {time.strftime('%Y-%m-%d')}.",
             "Command: `nice -n 10 python experiments/remote_bench.py`",
             f"Load average at the start: {' / '.join(f'{v:.1f}' for v in os.getloadavg())} (1/5/15 min): "
             "other engineers' jobs share the 2 cores, so wall times here are upper bounds and vary run to run.",
             ""]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bench_mlserver(tmp, lines)
        bench_faults(tmp, lines)
        bench_rig(tmp, lines)
    lines += [f"Load average at the end: {' / '.join(f'{v:.1f}' for v in os.getloadavg())}.", "",
              "## Reading", "",
              "- Requests carry the series as JSON numbers (the v2 REST protocol): encoding and parsing them, not "
              "the model, is the cost, so batch: `--max-batch` 64-256 against one request per series.",
              "- A search sends one generation per request (population 20 x repeats <= max_batch); the told scores "
              "through MLServer equal the local ones (FP32 in, the same onnxruntime kernels).",
              "- Retried faults (503, dropped connections) cost only their retries; malformed or wrong-shaped "
              "replies cost their batch (NaN, recorded as missing responses), and the genetic search absorbs them.",
              "- The stub server of the fault rows runs in the benchmark's own process (one GIL, numpy scoring in "
              "Python): compare those rows with each other, not with MLServer.",
              "- In the rig rows, `missing` counts presentations unanswered at the timeout (dropped, and held back "
              "past `timeout_s`); the held-back ones then arrive and are counted as `late`. The faulty run is "
              "slower because every generation with a dropped trial waits `timeout_s` (0.5 s) before closing.",
              ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
