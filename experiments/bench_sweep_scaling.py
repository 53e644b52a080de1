"""Sweep scaling: parallel efficiency of 2 local worker processes against 1, and a Dask LocalCluster.

The same sweep (N equal tasks: the genetic algorithm on one unit of a 3-layer conv net, 32 filters,
kernels 8-5-3, length 500, built here with onnx.helper; ~10-20 ms per generation of 20 series on one
core) runs into fresh folders with

  processes x1    xdream_ts.sweep(..., executor="processes", workers=1)
  processes x2    xdream_ts.sweep(..., executor="processes", workers=2)
  dask x2         xdream_ts.sweep(..., executor="dask", workers=2)   (LocalCluster, 2 worker processes)

Parallel efficiency E = T(x1) / (2 T(x2)); target >= 0.85. Wall times include starting the workers
(spawned processes import numpy, zarr and onnxruntime). Every run's best score must be identical
across the three (checked: the executor never changes a result). "Busy" is the sum of the tasks' own
wall times: busy / (workers x wall) shows how much of the wall time the workers spent in tasks.

    python experiments/bench_sweep_scaling.py --quick   # 8 tasks of 1,000 presentations (~2 minutes here)
    python experiments/bench_sweep_scaling.py           # 32 tasks of 4,000 presentations
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"


def conv_model(path: Path, length: int = 500, filters: int = 32) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    init, nodes, prev, cin = [], [], "series", 1
    for i, k in enumerate((8, 5, 3)):
        w = rng.normal(0, 1 / np.sqrt(cin * k), (filters, cin, k)).astype(np.float32)
        init.append(numpy_helper.from_array(w, f"conv{i}/weight"))
        pads = [(k - 1) // 2, k // 2]
        nodes += [helper.make_node("Conv", [prev, f"conv{i}/weight"], [f"conv{i}"], pads=pads),
                  helper.make_node("Relu", [f"conv{i}"], [f"block{i + 1}/out"])]
        prev, cin = f"block{i + 1}/out", filters
    nodes.append(helper.make_node("ReduceMean", [prev], ["gap"], axes=[2], keepdims=0))
    g = helper.make_graph(nodes, "conv3", [helper.make_tensor_value_info("series", TensorProto.FLOAT, ["batch", 1, length])],
                          [helper.make_tensor_value_info("gap", TensorProto.FLOAT, ["batch", filters])], initializer=init)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def config(model: Path, tasks: int, budget: int) -> dict:
    return {"name": "scaling", "budget": budget, "seeds": tasks, "decoders": ["basis:32"], "optimizers": ["genetic"],
            "noise": ["none"], "providers": "cpu", "threads": 1,
            "targets": [{"kind": "onnx", "model": str(model), "layer": "block3/out", "units": [5]}]}


def timed_sweep(cfg, out: Path, executor: str, workers: int):
    from xdream_ts.sweep import sweep
    t0 = time.perf_counter()
    r = sweep(cfg, out, executor=executor, workers=workers, progress=False)
    wall = time.perf_counter() - t0
    assert not r.failed, r.summary_line()
    busy = sum(e["wall_seconds"] for e in r.entries.values())
    return wall, busy, {k: e["best_score"] for k, e in r.entries.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tasks", type=int)
    ap.add_argument("--budget", type=int)
    ap.add_argument("--repeats", type=int, help="repetitions of the whole comparison (default 1; 2 in full mode)")
    ap.add_argument("--out", default=str(RESULTS / "sweep_scaling.md"))
    args = ap.parse_args(argv)
    tasks = args.tasks or (8 if args.quick else 32)
    budget = args.budget or (1000 if args.quick else 4000)
    reps = args.repeats or (1 if args.quick else 2)
    tmp = Path(tempfile.mkdtemp(prefix="xdream-scaling-"))
    rows, results = [], {}
    try:
        model = conv_model(tmp / "conv3.onnx")
        cfg = config(model, tasks, budget)
        for rep in range(reps):
            for name, ex, w in (("processes x1", "processes", 1), ("processes x2", "processes", 2), ("dask x2", "dask", 2)):
                wall, busy, best = timed_sweep(cfg, tmp / f"{name.replace(' ', '_')}-{rep}", ex, w)
                results.setdefault(name, []).append((wall, busy, w))
                prev = results.get("_best")
                if prev is not None and prev != best:
                    raise SystemExit(f"{name} gave different best scores than the first executor")
                results["_best"] = best
                print(f"rep {rep} {name:13s} wall {wall:7.1f}s busy {busy:7.1f}s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    t1 = np.median([w for w, _, _ in results["processes x1"]])
    for name in ("processes x1", "processes x2", "dask x2"):
        wall = float(np.median([w for w, _, _ in results[name]]))
        busy = float(np.median([b for _, b, _ in results[name]]))
        n = results[name][0][2]
        eff = t1 / (n * wall)
        rows.append(f"| {name} | {wall:.1f} | {tasks * budget / wall:.0f} | {t1 / wall:.2f} | {eff:.2f} | "
                    f"{busy / (n * wall):.2f} |")
    cmd = "python experiments/bench_sweep_scaling.py" + (" --quick" if args.quick else "")
    text = f"""# Sweep scaling: 1 vs 2 local workers, and a Dask LocalCluster

Machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs (load average at the
end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}); no GPU lent to this task (onnxruntime on CPU, 1 thread per
worker). Python {platform.python_version()}. Date: {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}. Command: `{cmd}`.
Sweep: {tasks} tasks (genetic, basis:32, one unit of a 3-layer conv net with 32 filters, length 500),
{budget} presentations each, run stores on local disk; medians over {reps} repetition(s). Best scores were
identical across executors (checked by the script).

| executor | wall s | presentations / s | speed-up over x1 | parallel efficiency | busy share (task time / workers x wall) |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Target: parallel efficiency of 2 local workers >= 0.85. On a machine whose 2 cores are shared with
other jobs, the second worker only gets a core when nobody else wants it: read the efficiency with the
load average above.
"""
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
