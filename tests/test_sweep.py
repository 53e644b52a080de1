"""Sweeps: real process pools and a real Dask LocalCluster give the same runs; a SIGKILLed sweep restarts
without redoing finished tasks and resumes the interrupted ones exactly; failures are recorded, not fatal.

Targets are the simulated neuron and a tiny ONNX conv net (length 64) built here with onnx.helper.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import xdream_ts
from xdream_ts import sweep as sw
from xdream_ts.cli import main as cli_main
from xdream_ts.errors import UserError

REPO = Path(__file__).resolve().parents[1]
L = 64


def tiny_onnx_model(path: Path, length: int = L, seed: int = 0) -> Path:
    """series (batch, 1, L) -> conv k5 (4 ch) -> relu 'block1/out' -> mean 'gap' -> matmul 'logits' (2)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (4, 1, 5)).astype(np.float32), "conv1/weight")
    b = numpy_helper.from_array(rng.normal(0, 0.1, (4,)).astype(np.float32), "conv1/bias")
    fc = numpy_helper.from_array(rng.normal(0, 1.0, (4, 2)).astype(np.float32), "fc/weight")
    nodes = [
        helper.make_node("Conv", ["series", "conv1/weight", "conv1/bias"], ["conv1"], name="conv1", pads=[2, 2]),
        helper.make_node("Relu", ["conv1"], ["block1/out"], name="relu1"),
        helper.make_node("ReduceMean", ["block1/out"], ["gap"], name="gap", axes=[2], keepdims=0),
        helper.make_node("MatMul", ["gap", "fc/weight"], ["logits"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("series", TensorProto.FLOAT, ["batch", 1, length])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], initializer=[w, b, fc])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def small_config(model: Path, budget: int = 100) -> dict:
    return {
        "name": "small", "budget": budget, "seeds": [3], "decoders": ["basis:8"], "providers": "cpu",
        "optimizers": ["genetic", {"name": "genetic", "label": "ga-mut0.2", "mutation_size": 0.2}],
        "noise": ["poisson:2"],
        "targets": [{"kind": "simulated", "length": L, "seeds": [1], "reference_max": "optimum"},
                    {"kind": "onnx", "model": str(model), "layer": "block1/out", "units": [2], "position": "center",
                     "reference_max": 0.5}],
    }


def stored(result: sw.SweepResult) -> dict:
    """task id -> (objective array, clean objective array) read back from the run stores."""
    out = {}
    for k in result.done:
        r = result.load_run(k)
        out[k] = (r.objective, r.clean_scores)
    return out


def test_process_pool_and_dask_local_cluster_give_bit_identical_runs(tmp_path):
    model = tiny_onnx_model(tmp_path / "tiny.onnx")
    cfg = small_config(model)
    a = sw.sweep(cfg, tmp_path / "procs", executor="processes", workers=2, progress=False)
    b = sw.sweep(cfg, tmp_path / "dask", executor="dask", workers=2, progress=False)
    assert len(a.entries) == 4 and sorted(a.done) == sorted(a.entries) and not a.failed
    assert sorted(b.done) == sorted(a.done)
    # two real worker processes in each case
    assert len({a.entries[k]["worker"] for k in a.done}) >= 1
    for k in a.done:
        assert a.entries[k]["best_score"] == b.entries[k]["best_score"]  # bit-identical
        assert a.entries[k]["best_clean_score"] == b.entries[k]["best_clean_score"]
        assert a.entries[k]["presentations"] == 100
    sa, sb = stored(a), stored(b)
    for k in sa:
        np.testing.assert_array_equal(sa[k][0], sb[k][0])
        np.testing.assert_array_equal(sa[k][1], sb[k][1])
    # the index is plain JSON with what a reader needs
    index = json.loads((tmp_path / "procs" / "index.json").read_text())
    e = index["tasks"][a.done[0]]
    assert e["status"] == "done" and e["store"].startswith("runs/") and "params" in e
    onnx_rows = [r for r in a.rows() if r["kind"] == "onnx"]
    # relative activation: the clean response of the series each run reports (under noise the optimizer's
    # own pick, not its best observed) over the target's reference
    runs = [a.load_run(k) for k in a.done]
    expected = sorted(float(r.clean_objective[r.reported_index]) / 0.5 for r in runs if r.reference_max == 0.5)
    assert sorted(r["relative_activation"] for r in onnx_rows) == pytest.approx(expected)
    sim_rows = [r for r in a.rows() if r["kind"] == "simulated"]
    assert all(0 < r["relative_activation"] <= 1 + 1e-9 for r in sim_rows)  # fraction of the known optimum


def test_one_onnx_session_per_worker_reused_across_tasks(tmp_path, monkeypatch):
    from xdream_ts.adapters import onnx as onnx_adapter
    model = tiny_onnx_model(tmp_path / "tiny.onnx")
    cfg = {**small_config(model, budget=40), "seeds": [0, 1, 2], "noise": ["none", "gain:0.3"],
           "targets": small_config(model)["targets"][1:]}
    created = []  # the model is new (tmp_path): no session of it can be in the per-process cache yet
    orig_init = onnx_adapter.OnnxScorer.__init__

    def counting_init(self, *a, **k):  # counts constructions; the real scorer runs
        created.append(1)
        orig_init(self, *a, **k)

    monkeypatch.setattr(onnx_adapter.OnnxScorer, "__init__", counting_init)
    r = sw.sweep(cfg, tmp_path / "serial", executor="serial", progress=False)
    assert len(r.done) == 12  # 2 optimizers x 2 noise models x 3 seeds, all in this process
    assert len(created) == 1  # targets.build(spec, reuse=True) kept the first session


def _sweep_script(out: Path, cfg: dict, workers: int) -> str:
    return textwrap.dedent(f"""
        import json
        from xdream_ts.sweep import sweep
        if __name__ == "__main__":
            sweep(json.loads({json.dumps(json.dumps(cfg))}), {str(out)!r}, executor="processes",
                  workers={workers}, progress=False)
    """)


def _wait_for(predicate, timeout: float, what: str):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _index(out: Path) -> dict:
    try:
        return json.loads((out / "index.json").read_text())["tasks"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return {}


def test_sigkilled_sweep_restarts_without_redoing_finished_tasks_and_resumes_exactly(tmp_path):
    cfg = {"budget": 600, "seeds": 4, "decoders": ["basis:8"], "optimizers": ["genetic"], "noise": ["poisson:2"],
           "targets": [{"kind": "simulated", "length": L, "seed": 4}]}
    out = tmp_path / "sweep"
    script = tmp_path / "run_sweep.py"
    script.write_text(_sweep_script(out, cfg, workers=2))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def two_done_and_one_partial():
            idx = _index(out)
            done = [k for k, e in idx.items() if e["status"] == "done"]
            partial = [k for k, e in idx.items() if e["status"] == "running" and _generations(out / e["store"]) >= 3]
            return (done, partial) if len(done) >= 2 and partial else None
        done, partial = _wait_for(two_done_and_one_partial, 60, "two finished tasks and one half-way")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, as a power cut would
        proc.wait()
    idx = _index(out)
    done = [k for k, e in idx.items() if e["status"] == "done"]
    mtimes = {k: (out / idx[k]["store"] / "zarr.json").stat().st_mtime_ns for k in done}
    before = {k: _generations(out / idx[k]["store"]) for k in partial}

    r = sw.sweep(cfg, out, executor="processes", workers=2, progress=False)
    assert len(r.done) == 4 and not r.failed
    for k in done:  # finished runs were not touched again
        assert (out / idx[k]["store"] / "zarr.json").stat().st_mtime_ns == mtimes[k]
        assert r.entries[k].get("skipped") is True
    for k in partial:
        assert r.entries[k]["resumed"] is True and before[k] >= 3
    # the resumed runs equal uninterrupted ones, bit for bit
    for k in partial:
        task = next(t for t in sw.make_tasks(sw.load_config(cfg), out) if t["id"] == k)
        dec, scorer, opt, ref, _, _ = sw.build_task(task)
        fresh = xdream_ts.run(dec, scorer, opt, budget=task["budget"], seed=task["seed"], progress=False)
        resumed = r.load_run(k)
        np.testing.assert_array_equal(resumed.objective, fresh.objective)
        np.testing.assert_array_equal(resumed.scores, fresh.scores)


def _generations(store: Path) -> int:
    try:
        return int(json.loads((store / "zarr.json").read_text())["attributes"]["generations_completed"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def test_a_worker_killed_mid_task_is_retried_alone_and_the_sweep_completes(tmp_path):
    import psutil
    cfg = {"budget": 600, "seeds": 3, "decoders": ["basis:8"], "optimizers": ["genetic"], "noise": ["none"],
           "targets": [{"kind": "simulated", "length": L, "seed": 5}]}
    out = tmp_path / "sweep"
    killed = []

    def killer():  # the OOM killer's part: SIGKILL one worker process while it runs a task
        def running_worker():
            idx = _index(out)
            busy = [e for e in idx.values() if e["status"] == "running" and _generations(out / e["store"]) >= 2]
            kids = [p for p in psutil.Process().children()  # pool workers, not the resource tracker
                    if "spawn_main" in " ".join(p.cmdline())]
            return kids if busy and kids else None
        kids = _wait_for(running_worker, 60, "a worker half-way through a task")
        kids[0].send_signal(signal.SIGKILL)
        killed.append(kids[0].pid)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    r = sw.sweep(cfg, out, executor="processes", workers=2, progress=False)
    th.join(5)
    assert killed, "no worker was killed"
    assert len(r.done) == 3 and not r.failed
    assert max(e["attempts"] for e in r.entries.values()) == 2  # the broken tasks ran again


def test_a_failing_task_is_recorded_and_not_fatal(tmp_path, capsys):
    cfg = {"budget": 60, "seeds": 1, "decoders": ["basis:8"], "noise": ["none"],
           # mutation_rate 2 passes the config check (a known parameter) and fails in the task
           "optimizers": ["random", {"name": "genetic", "label": "bad", "mutation_rate": 2.0}],
           "targets": [{"kind": "simulated", "length": L}]}
    r = sw.sweep(cfg, tmp_path / "s", executor="serial", progress=False)
    assert len(r.done) == 1 and len(r.failed) == 1
    e = r.entries[r.failed[0]]
    assert "mutation_rate" in e["error"] and "Traceback" in e["traceback"]
    assert "1 failed" in r.summary_line() and r.failed[0] in r.summary_line()
    mtime = (tmp_path / "s" / r.entries[r.done[0]]["store"] / "zarr.json").stat().st_mtime_ns
    # the CLI: re-running retries the failure only, prints one summary line, exits 1
    toml = tmp_path / "s.toml"
    toml.write_text(textwrap.dedent(f"""
        budget = 60
        seeds = 1
        decoders = ["basis:8"]
        optimizers = ["random", {{name = "genetic", label = "bad", mutation_rate = 2.0}}]
        [[targets]]
        kind = "simulated"
        length = {L}
    """))
    code = cli_main(["sweep", str(toml), "--out", str(tmp_path / "s"), "--executor", "serial", "--no-progress"])
    assert code == 1
    line = capsys.readouterr().out.strip()
    assert "1 already complete" in line and "1 failed" in line and len(line.splitlines()) == 1
    assert (tmp_path / "s" / r.entries[r.done[0]]["store"] / "zarr.json").stat().st_mtime_ns == mtime
    assert load_attempts(tmp_path / "s", r.failed[0]) == 2


def load_attempts(out: Path, key: str) -> int:
    return sw.load_sweep(out).entries[key]["attempts"]


def test_raising_the_budget_extends_finished_runs(tmp_path):
    cfg = {"budget": 60, "decoders": ["basis:8"], "optimizers": ["genetic"], "targets": [{"kind": "simulated", "length": L}]}
    a = sw.sweep(cfg, tmp_path / "s", executor="serial", progress=False)
    k = a.done[0]
    b = sw.sweep({**cfg, "budget": 100}, tmp_path / "s", executor="serial", progress=False)
    assert b.done == [k] and b.entries[k]["presentations"] == 100 and b.entries[k]["resumed"] is True
    fresh = sw.sweep({**cfg, "budget": 100}, tmp_path / "fresh", executor="serial", progress=False)
    np.testing.assert_array_equal(b.load_run(k).objective, fresh.load_run(k).objective)


def test_first_super_presentation_counts_presentations_to_the_first_super_stimulus(tmp_path):
    cfg = {"budget": 200, "repeats": 2, "decoders": ["basis:8"], "optimizers": ["genetic"], "noise": ["poisson:4"],
           "targets": [{"kind": "simulated", "length": L, "reference_max": 6.0}]}
    r = sw.sweep(cfg, tmp_path / "s", executor="serial", progress=False)
    k = r.done[0]
    run = r.load_run(k)
    clean = np.concatenate([run.clean_objective[g, :n] for g, n in enumerate(run.n_evaluated)])
    first = int(np.flatnonzero(clean > 6.0)[0])
    assert r.entries[k]["first_super_presentation"] == (first + 1) * 2
    assert clean[:first].max() <= 6.0 < clean.max()


@pytest.mark.parametrize("cfg, match", [
    ({"budget": 10, "targets": [{"kind": "simulated"}], "optimiser": ["genetic"]}, "unknown keys optimiser"),
    ({"budget": 10, "targets": []}, "no \\[\\[targets\\]\\]"),
    ({"budget": 10, "optimizers": ["gentic"], "targets": [{"kind": "simulated", "length": 32}]}, "did you mean 'genetic'"),
    ({"budget": 10, "noise": ["poison"], "targets": [{"kind": "simulated", "length": 32}]}, "unknown noise"),
    ({"budget": 0, "targets": [{"kind": "simulated"}]}, "budget must be a positive integer"),
    ({"budget": 10, "optimizers": [{"name": "genetic", "mutation": 1}], "targets": [{"kind": "simulated", "length": 32}]},
     "does not take mutation"),
    ({"budget": 10, "targets": [{"kind": "rig"}]}, "target kind 'rig' unknown"),
])
def test_config_errors_are_one_line_user_errors(tmp_path, cfg, match):
    with pytest.raises(UserError, match=match) as e:
        sw.sweep(cfg, tmp_path / "s", executor="serial", progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "s").exists()  # nothing written for a config that cannot run


def test_onnx_target_errors_name_the_tensor(tmp_path):
    model = tiny_onnx_model(tmp_path / "tiny.onnx")
    base = {"budget": 10, "decoders": ["basis:8"]}
    with pytest.raises(UserError, match="no targetable tensor 'block9/out'"):
        sw.sweep({**base, "targets": [{"kind": "onnx", "model": str(model), "layer": "block9/out"}]},
                 tmp_path / "a", executor="serial", progress=False)
    with pytest.raises(UserError, match="unit 7 out of range"):
        sw.sweep({**base, "targets": [{"model": str(model), "layer": "block1/out", "units": [7]}]},
                 tmp_path / "b", executor="serial", progress=False)
    with pytest.raises(UserError, match="not found"):
        sw.sweep(str(tmp_path / "missing.toml"), tmp_path / "c", progress=False)


def test_a_task_run_records_its_target_spec_which_rebuilds_the_same_scorer(tmp_path):
    from xdream_ts.targets import TargetSpec, build
    model = tiny_onnx_model(tmp_path / "tiny.onnx")
    cfg = {**small_config(model, budget=40), "optimizers": ["genetic"], "noise": ["gain:0.3"]}
    r = sw.sweep(cfg, tmp_path / "s", executor="serial", progress=False)
    assert len(r.done) == 2
    for k in r.done:
        run = r.load_run(k)
        spec = TargetSpec.from_config(run.config)
        assert spec.noise == "gain:0.3" and spec.noise_seed == 3
        assert spec.kind == r.entries[k]["params"]["target"]["kind"]
        n = int(run.n_evaluated[0])
        np.testing.assert_array_equal(build(spec).clean(run.series[0, :n]), run.clean_scores[0, :n])


def test_resume_refuses_a_model_file_that_changed_and_keeps_the_run(tmp_path):
    from xdream_ts.adapters.onnx import OnnxScorer, Target
    from xdream_ts.decoders.basis import BasisDecoder
    model, store = tiny_onnx_model(tmp_path / "m.onnx", seed=0), tmp_path / "r.zarr"

    def go(budget, resume):
        return xdream_ts.run(BasisDecoder(L, n_basis=8), OnnxScorer(model, Target("block1/out", 1)), "genetic",
                             budget=budget, seed=0, store=store, resume=resume, progress=False)

    first = go(40, False)
    tiny_onnx_model(model, seed=1)  # retrained weights, same path
    with pytest.raises(UserError, match="model file changed"):
        go(80, True)
    kept = xdream_ts.load_run(store)  # nothing recorded was lost or touched
    assert kept.presentations == first.presentations == 40
    np.testing.assert_array_equal(kept.scores, first.scores)
    tiny_onnx_model(model, seed=0)  # the original weights back: resume works
    assert go(80, True).presentations == 80


def test_a_sweep_rerun_after_the_model_changed_refuses_instead_of_reusing_old_results(tmp_path):
    model = tiny_onnx_model(tmp_path / "m.onnx", seed=0)
    cfg = {"name": "swap", "budget": 40, "seeds": [0], "decoders": ["basis:8"], "optimizers": ["genetic"],
           "targets": [{"kind": "onnx", "model": str(model), "layer": "block1/out", "units": [1]}]}
    first = sw.sweep(cfg, tmp_path / "out", executor="serial", progress=False)
    stores = sorted((tmp_path / "out").rglob("zarr.json"))
    before = [p.read_bytes() for p in stores]
    assert sw.sweep(cfg, tmp_path / "out", executor="serial", progress=False).index["tasks"].keys() == \
        first.index["tasks"].keys()  # same model: the finished task is simply kept
    tiny_onnx_model(model, seed=1)  # retrained weights under the same path
    with pytest.raises(UserError, match="another version of"):
        sw.sweep(cfg, tmp_path / "out", executor="serial", progress=False)
    assert [p.read_bytes() for p in stores] == before  # the finished runs are untouched


def test_a_target_with_data_fits_auto_once_and_starts_every_task_from_the_data(tmp_path):
    model = tiny_onnx_model(tmp_path / "tiny.onnx")
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, L)
    X = 3.0 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 4, (60, 1)) * t) + 0.1 * rng.standard_normal((60, L))
    np.save(tmp_path / "real.npy", X[:, None].astype(np.float32))  # raw units around 3: not z-normalised
    cfg = {"name": "data", "budget": 60, "seeds": [0, 1], "decoders": ["auto"], "optimizers": ["default"],
           "providers": "cpu",
           "targets": [{"kind": "onnx", "model": str(model), "layer": "block1/out", "units": [0, 1],
                        "data": str(tmp_path / "real.npy")}]}
    r = sw.sweep(cfg, tmp_path / "s", executor="serial", progress=False)
    assert len(r.done) == 4
    fits = list((tmp_path / ".xdream_ts").glob("pca-*.npz"))
    assert len(fits) == 1  # one fit beside the data, shared by every task
    for k in r.done:
        run = r.load_run(k)
        assert run.config["data"]["space"] == "data" and run.config["init_info"]["n"] == 10
        assert run.reference_max == pytest.approx(run.config["data"]["best_real_score"])
        shown = run.series[np.isfinite(run.series).all(axis=-1)]
        assert 1.5 < float(shown.mean()) < 4.5  # the data's units, not z-normalised
        assert run.best_score >= run.config["data"]["best_real_score"] - 0.1 * abs(run.reference_max)
