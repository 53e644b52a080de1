"""Plausible super stimuli (issue 16): a --plausible run reports a stimulus within the quantile of the real
series' own Mahalanobis distances, measured as `show --plausibility` measures it, and as a separate ONNX
Runtime session with an independently refitted covariance measures it; feasibility-first ranking; the
"reported" series of every run; one-line refusals."""
import json

import numpy as np
import pytest

from xdream_ts.cli import main
from xdream_ts.errors import UserError
from xdream_ts.plausible import feasibility_first

L = 64


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _tiny_onnx(path, expose_features: bool = False):
    """Conv -> ReLU -> mean over time ("feat", the penultimate layer) -> Gemm ("logits"). With
    ``expose_features`` the features are a graph output too: the independent session of the check."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array((rng.standard_normal((6, 1, 5)) / 5 ** 0.5).astype(np.float32), "w"),
             numpy_helper.from_array((0.1 * rng.standard_normal(6)).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((2, 6)).astype(np.float32), "wl"),
             numpy_helper.from_array(np.zeros(2, np.float32), "bl")]
    nodes = [helper.make_node("Conv", ["series", "w", "b"], ["conv"], pads=[2, 2], name="conv"),
             helper.make_node("Relu", ["conv"], ["block/out"], name="relu"),
             helper.make_node("GlobalAveragePool", ["block/out"], ["pool"], name="pool"),
             helper.make_node("Flatten", ["pool"], ["feat"], name="flatten"),
             helper.make_node("Gemm", ["feat", "wl", "bl"], ["logits"], transB=1, name="head")]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])]
    if expose_features:
        outputs.append(helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["batch", 6]))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("series", TensorProto.FLOAT, ["batch", 1, L])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _real_series(path, n=400, seed=0):
    """Synthetic 'real' data: a few sines of random frequency and phase plus noise, z-normalised."""
    rng = np.random.default_rng(seed)
    t = np.arange(L) / L
    X = np.zeros((n, L))
    for _ in range(3):
        X += rng.uniform(0.2, 1, (n, 1)) * np.sin(2 * np.pi * (rng.uniform(1, 6, (n, 1)) * t + rng.uniform(0, 1, (n, 1))))
    X += 0.2 * rng.standard_normal((n, L))
    X = (X - X.mean(1, keepdims=True)) / X.std(1, keepdims=True)
    np.save(path, X.astype(np.float32))
    return path


# ------------------------------------------------------------------------------------- the ranking

def _rescored(tmp_path, data, series, quantile=0.95):
    """``series`` re-scored by a separate ONNX Runtime session on the tiny model with its features exposed,
    the covariance refitted with numpy on the real series: (logits, real logits, distances, threshold)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(_tiny_onnx(tmp_path / "open.onnx", expose_features=True)),
                                providers=["CPUExecutionProvider"])
    real_logits, real_feat = sess.run(["logits", "feat"], {"series": np.load(data)[:, None, :]})
    logit, feat = sess.run(["logits", "feat"], {"series": series})
    mu, cov = real_feat.mean(0), np.cov(real_feat.astype(np.float64), rowvar=False, bias=True)
    inv = np.linalg.inv(cov)

    def dist(a):
        z = a.astype(np.float64) - mu
        return np.sqrt(np.einsum("ij,jk,ik->i", z, inv, z))

    return logit, real_logits, dist(feat), np.quantile(dist(real_feat), quantile)

def test_feasibility_first_puts_every_feasible_above_every_infeasible():
    rng = np.random.default_rng(3)
    a = rng.normal(0, 10, 500)
    v = rng.normal(0, 1, 500)  # <= 0: feasible
    value = feasibility_first(a, v, floor=5.0, scale=2.0)  # a floor above some feasible activations too
    feas = v <= 0
    assert value[feas].min() > value[~feas].max()
    np.testing.assert_array_equal(value[feas], a[feas])  # feasible: their activation, order kept
    inf = np.flatnonzero(~feas)
    by_violation = inf[np.argsort(v[inf])]
    assert np.all(np.diff(value[by_violation]) < 0)  # smaller violation ranks higher, whatever the activation
    a[0], v[1] = np.nan, np.nan
    out = feasibility_first(a, v, floor=0.0)
    assert np.isnan(out[0]) and np.isnan(out[1])


# -------------------------------------------------------------------------------- the shipped model
def test_plausible_run_on_the_shipped_model(tmp_path, capsys):
    out_dir = str(tmp_path / "p.zarr")
    code, out, err = _run(["run", "--plausible", "--target", "logits:1", "--budget", "200", "--out", out_dir,
                           "--no-progress"], capsys)
    assert code == 0, err
    assert "plausible      feasible" in out and "unconstrained" in out
    code, out, _ = _run(["show", out_dir], capsys)  # no flag: a plausible run says its distance and percentile
    assert code == 0 and "Mahalanobis" in out and "percentile" in out
    s = json.loads(_run(["show", out_dir, "--json"], capsys)[1])
    p = s["plausibility"]
    assert p["quantile"] == 0.99 and p["layer"] == "gap" and p["feasible"] and p["constraint"] == "penalty"
    assert p["best_distance"] <= p["threshold"] and p["best_percentile"] <= 99.5
    assert s["reported"] == {"generation": p["reported"]["generation"], "member": p["reported"]["member"]}
    assert p["reported"]["relative_activation"] > 1  # a plausible super stimulus of this unit
    assert p["unconstrained"]["activation"] >= p["reported"]["activation"]
    # show --plausibility refits the covariance through its own session: the same distance
    again = json.loads(_run(["show", out_dir, "--json", "--plausibility"], capsys)[1])["plausibility"]
    assert again["best_distance"] == pytest.approx(p["reported"]["distance"], rel=1e-5)
    assert again["best_percentile"] == pytest.approx(p["reported"]["percentile"])


# ------------------------------------------------------------------------ a tiny model with its data
def test_plausible_run_on_a_tiny_model_rescored_independently(tmp_path, capsys):
    from xdream_ts.loop import load_run
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    data = _real_series(tmp_path / "real.npy")
    out_dir = str(tmp_path / "p.zarr")
    code, out, err = _run(["run", "--model", str(model), "--target", "logits:0", "--data", str(data),
                           "--plausible", "0.95", "--budget", "400", "--out", out_dir, "--no-progress"], capsys)
    assert code == 0, err
    r = load_run(out_dir)
    s = r.summary()
    p = s["plausibility"]
    assert p["layer"] == "feat" and p["feasible"]
    g, m = s["reported"]["generation"], s["reported"]["member"]
    series = r.series[g, m][None].astype(np.float32)

    # a separate ONNX Runtime session on the model with its features exposed, the covariance refitted with
    # numpy (the plain sample covariance: 400 series for 6 dimensions is what the fit's 'auto' picks)
    assert p["method"] == "empirical"
    logit, real_logits, d, threshold = _rescored(tmp_path, data, series)
    assert d[0] <= threshold + 1e-6
    assert d[0] == pytest.approx(p["best_distance"], rel=1e-4)
    assert threshold == pytest.approx(p["threshold"], rel=1e-4)
    assert logit[0, 0] == pytest.approx(p["reported"]["activation"], rel=1e-5)
    assert logit[0, 0] > real_logits[:, 0].max()  # beats the best real series, and stays plausible
    # the default searched the sphere through its start (the feasible region is the data's), not twice it
    start = r.codes[0, -1]
    assert r.config["optimizer"]["radius"] == pytest.approx(float(np.linalg.norm(start)))
    # and show --plausibility, which refits from the run's recorded reference series, agrees
    again = json.loads(_run(["show", out_dir, "--json", "--plausibility"], capsys)[1])["plausibility"]
    assert again["best_distance"] == pytest.approx(p["best_distance"], rel=1e-6)


def test_feasibility_first_is_recorded_and_reports_the_best_feasible(tmp_path):
    from xdream_ts.loop import run
    from xdream_ts.targets import TargetSpec
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    data = _real_series(tmp_path / "real.npy")
    r = run("auto", TargetSpec(model=str(model), units=["logits:0"], data=str(data)), "cmaes", budget=200,
            progress=False, plausible=0.99, plausibility_method="feasibility-first", store=tmp_path / "r.zarr")
    p = r.summary()["plausibility"]
    assert p["constraint"] == "feasibility-first" and r.config["scorer"]["method"] == "feasibility-first"
    if p["n_feasible"]:
        assert p["feasible"] and p["best_distance"] <= p["threshold"]
    assert r.scores.shape[-1] == 2  # the raw activation and the distance of every presented series


# ------------------------------------------------------------------------------ every run reports
def test_show_json_has_reported_for_a_plain_run(tmp_path, capsys):
    out_dir = str(tmp_path / "r.zarr")
    assert _run(["run", "--decoder", "basis:8", "--budget", "80", "--out", out_dir, "--no-progress"], capsys)[0] == 0
    s = json.loads(_run(["show", out_dir, "--json"], capsys)[1])
    assert set(s["reported"]) == {"generation", "member"}
    # the shipped model's sample is known: the distance is measured, but nothing was constrained
    assert "reported" not in s["plausibility"] and s["plausibility"]["layer"] == "gap"
    from xdream_ts.loop import load_run
    assert tuple(s["reported"].values()) == load_run(out_dir).reported_index


# ------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("extra, fragment", [
    (["--endpoint", "http://127.0.0.1:9/v2", "--plausible"], "remote endpoint has none"),
    (["--plausible", "1.5"], "strictly between 0 and 1"),
    (["--plausible", "0"], "strictly between 0 and 1"),
    (["--plausible", "--plausibility-layer", "no/such"], "no targetable tensor"),
    (["--plausible", "--noise", "poisson"], "not supported yet"),
    (["--plausible", "--optimizer", "dream", "--plausibility-layer", "input"], "in a model layer"),
])
def test_refusals_are_one_line_and_exit_2(tmp_path, capsys, extra, fragment):
    code, _, err = _run(["run", "--budget", "40", "--out", str(tmp_path / "r.zarr"), "--no-progress", *extra], capsys)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err


def test_data_of_the_wrong_channel_count_is_one_line(tmp_path, capsys):
    # (data of another length are resampled to the model's, with a note: the data module's rule)
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    np.save(tmp_path / "two.npy", np.random.default_rng(0).standard_normal((50, 2, L)).astype(np.float32))
    code, _, err = _run(["run", "--model", str(model), "--data", str(tmp_path / "two.npy"), "--plausible",
                         "--budget", "40", "--out", str(tmp_path / "r.zarr"), "--no-progress"], capsys)
    assert code == 2 and "channel" in err and len(err.strip().splitlines()) == 1, err


def test_a_simulated_neuron_is_refused_in_the_api():
    from xdream_ts.loop import run
    from xdream_ts.targets import TargetSpec
    with pytest.raises(UserError, match="simulated neuron has none.*--plausibility-model"):
        run("basis:8", TargetSpec(kind="simulated", length=L), "random", budget=20, progress=False, plausible=0.99)


def test_a_resumed_plausible_run_continues_exactly(tmp_path):
    # the ranking's floor is scorer state: the store keeps it per generation, so resume matches a run in one go
    from xdream_ts.loop import run
    from xdream_ts.targets import TargetSpec
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    spec = TargetSpec(model=str(model), units=["logits:0"], data=str(_real_series(tmp_path / "real.npy")))
    whole = run("auto", spec, "genetic", budget=200, progress=False, plausible=0.9, store=tmp_path / "a.zarr")
    run("auto", spec, "genetic", budget=100, progress=False, plausible=0.9, store=tmp_path / "b.zarr")
    resumed = run("auto", spec, "genetic", budget=200, progress=False, plausible=0.9, store=tmp_path / "b.zarr",
                  resume=True)
    np.testing.assert_array_equal(resumed.objective, whole.objective)
    np.testing.assert_array_equal(resumed.scores, whole.scores)
    assert resumed.reported_index == whole.reported_index


# ------------------------------------------------------------------------------ input space
def test_a_simulated_neuron_with_data_is_constrained_in_input_space(tmp_path, capsys):
    from xdream_ts.analysis import fit_reference
    from xdream_ts.loop import run
    from xdream_ts.plausible import InputFeatures
    from xdream_ts.targets import TargetSpec
    data = _real_series(tmp_path / "real.npy")
    r = run("auto", TargetSpec(kind="simulated", length=L, data=str(data)), "cmaes", budget=300, progress=False,
            plausible=0.99, store=tmp_path / "r.zarr")
    p = r.summary()["plausibility"]
    assert p["layer"] == "input" and p["feasible"] and p["best_distance"] <= p["threshold"]
    # refitted independently of the run: its features and covariance from the same real series
    X = np.load(data)
    feats = InputFeatures(X)
    fit = fit_reference(feats(X))
    g, m = r.reported_index
    assert fit.mahalanobis(feats(r.series[g, m][None]))[0] == pytest.approx(p["best_distance"], rel=1e-6)
    again = json.loads(_run(["show", str(tmp_path / "r.zarr"), "--json", "--plausibility"], capsys)[1])
    assert again["plausibility"]["best_distance"] == pytest.approx(p["best_distance"], rel=1e-6)


def test_a_model_can_be_constrained_in_input_space_too(tmp_path, capsys):
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    data = _real_series(tmp_path / "real.npy")
    out_dir = str(tmp_path / "p.zarr")
    code, out, err = _run(["run", "--model", str(model), "--target", "logits:0", "--data", str(data), "--plausible",
                           "--plausibility-layer", "input", "--budget", "200", "--out", out_dir, "--no-progress"],
                          capsys)
    assert code == 0, err
    p = json.loads(_run(["show", out_dir, "--json"], capsys)[1])["plausibility"]
    assert p["layer"] == "input" and p["best_distance"] <= p["threshold"]


# ------------------------------------------------- compare, sweep, inverse-set, show and report (wiring)
def test_compare_plausible_reports_feasible_series_rescored_independently(tmp_path, capsys):
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    data = _real_series(tmp_path / "real.npy")
    out = tmp_path / "cmp"
    code, _, err = _run(["compare", "--model", str(model), "--target", "logits:0", "--data", str(data),
                         "--optimizers", "default,cmaes", "--seeds", "1", "--evaluations", "300", "--out", str(out),
                         "--plausible", "0.95"], capsys)
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    assert res["plausible"] == 0.95 and "plausibility" in (out / "table.md").read_text()
    from xdream_ts.loop import load_run
    for row in res["rows"]:
        r = load_run(out / "runs" / f"{row['optimizer']}-seed0.zarr")
        series = r.series[r.reported_index][None].astype(np.float32)
        logit, real_logits, d, threshold = _rescored(tmp_path, data, series)
        assert row["feasible"] and d[0] <= threshold + 1e-6, row
        assert logit[0, 0] == pytest.approx(row["best_activation"], rel=1e-5)
    assert max(row["best_activation"] for row in res["rows"]) > real_logits[:, 0].max()


def test_sweep_plausible_runs_every_model_target_constrained(tmp_path, capsys):
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    data = _real_series(tmp_path / "real.npy")
    (tmp_path / "s.toml").write_text(
        f'budget = 200\nseeds = 1\ndecoders = ["auto"]\noptimizers = ["default"]\n'
        f'[[targets]]\nkind = "onnx"\nmodel = "{model}"\nlayer = "logits"\nunits = [0, 1]\ndata = "{data}"\n')
    out = tmp_path / "sw"
    code, _, err = _run(["sweep", str(tmp_path / "s.toml"), "--out", str(out), "--plausible", "0.95",
                         "--executor", "serial", "--no-progress"], capsys)
    assert code == 0, err
    from xdream_ts.loop import load_run
    stores = sorted((out / "runs").glob("*.zarr"))
    assert len(stores) == 2
    for store in stores:
        r = load_run(store)
        p = r.summary()["plausibility"]
        assert r.config["plausible"]["quantile"] == 0.95 and p["feasible"]
        _, _, d, threshold = _rescored(tmp_path, data, r.series[r.reported_index][None].astype(np.float32))
        assert d[0] <= threshold + 1e-6
    # the report draws distance against activation and says how plausible each best run is
    code, text, err = _run(["report", str(out), "--out", str(tmp_path / "rep")], capsys)
    assert code == 0, err
    assert text.count("plausibility:") == 2 and "within the threshold" in text
    assert len(list((tmp_path / "rep").glob("plausibility_*.png"))) == 2
    assert "## Plausibility of the reported series" in (tmp_path / "rep" / "report.md").read_text()


def test_inverse_set_plausible_keeps_every_sample_within_the_quantile(tmp_path, capsys):
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    data = _real_series(tmp_path / "real.npy")
    out = tmp_path / "inv.zarr"
    real = _rescored(tmp_path, data, np.load(data)[:1, None, :])[1][:, 0]
    lo, hi = np.quantile(real, [0.75, 1.0])  # the top quarter of the real responses
    code, text, err = _run(["inverse-set", "--model", str(model), "--layer", "logits", "--unit", "0", "--data",
                            str(data), "--range", str(lo), str(hi), "--n", "30", "--out", str(out),
                            "--plausible", "0.95", "--json", "--no-progress"], capsys)
    assert code == 0, err
    import zarr
    series = np.asarray(zarr.open_group(str(out), mode="r")["series"]).astype(np.float32)
    assert len(series) == 30
    logit, real_logits, d, threshold = _rescored(tmp_path, data, series.reshape(len(series), 1, L))
    assert np.all(d <= threshold + 1e-6)
    assert np.all((logit[:, 0] >= lo - 1e-4) & (logit[:, 0] <= hi + 1e-4))


def _run_with_data(tmp_path, capsys, budget: int):
    """A plain (unconstrained) run of the tiny model with its data: (data path, run store path)."""
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    data = _real_series(tmp_path / "real.npy")
    out_dir = str(tmp_path / "r.zarr")
    assert _run(["run", "--model", str(model), "--target", "logits:0", "--data", str(data), "--budget", str(budget),
                 "--out", out_dir, "--no-progress"], capsys)[0] == 0
    return data, out_dir


def test_show_and_report_say_how_plausible_a_run_with_data_is_without_a_flag(tmp_path, capsys):
    data, out_dir = _run_with_data(tmp_path, capsys, 200)
    s = json.loads(_run(["show", out_dir, "--json"], capsys)[1])
    p = s["plausibility"]
    assert p["layer"] == "feat" and p["reference_source"] == str(data)
    from xdream_ts.loop import load_run
    r = load_run(out_dir)
    _, _, d, _ = _rescored(tmp_path, data, r.series[r.reported_index][None].astype(np.float32), 0.99)
    assert p["best_distance"] == pytest.approx(d[0], rel=1e-4)
    assert "plausibility   Mahalanobis" in _run(["show", out_dir], capsys)[1]
    assert "plausibility" not in json.loads(_run(["show", out_dir, "--json", "--no-plausibility"], capsys)[1])
    code, text, _ = _run(["report", out_dir, "--out", str(tmp_path / "rep")], capsys)
    assert code == 0 and f"distance {p['best_distance']:.3g}" in text
    assert (tmp_path / "rep" / "plausibility_run.png").is_file()


@pytest.mark.parametrize("command, extra, fragment", [
    ("compare", ["--plausible", "1.5"], "strictly between 0 and 1"),
    ("compare", ["--plausible", "--layer", "no/such"], "no targetable tensor"),
    ("inverse-set", ["--plausible", "0"], "strictly between 0 and 1"),
    ("inverse-set", ["--plausible", "--plausibility-layer", "no/such"], "no targetable tensor"),
    ("inverse-set", ["--plausible", "--method", "gradient"], "gradient-free"),
    ("sweep", ["--plausible", "2"], "strictly between 0 and 1"),
])
def test_wiring_refusals_are_one_line_and_exit_2(tmp_path, capsys, command, extra, fragment):
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    data = _real_series(tmp_path / "real.npy")
    if command == "compare":
        argv = ["compare", "--model", str(model), "--target", "logits:0", "--data", str(data), "--optimizers",
                "random", "--seeds", "1", "--evaluations", "20", "--out", str(tmp_path / "c")]
    elif command == "inverse-set":
        argv = ["inverse-set", "--model", str(model), "--layer", "logits", "--data", str(data), "--range", "0", "1",
                "--n", "5", "--out", str(tmp_path / "i.zarr"), "--no-progress"]
    else:
        (tmp_path / "s.toml").write_text(f'budget = 20\n[[targets]]\nkind = "onnx"\nmodel = "{model}"\n'
                                         f'layer = "logits"\ndata = "{data}"\n')
        argv = ["sweep", str(tmp_path / "s.toml"), "--out", str(tmp_path / "sw"), "--executor", "serial",
                "--no-progress"]
    code, _, err = _run([*argv, *extra], capsys)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "c").exists() and not (tmp_path / "i.zarr").exists()


def test_a_sweep_target_with_plausible_needs_data_and_no_noise(tmp_path):
    from xdream_ts.sweep import load_config
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    target = {"kind": "onnx", "model": str(model), "layer": "logits", "plausible": 0.99}
    with pytest.raises(UserError, match="needs data"):
        load_config({"targets": [target]})
    data = str(_real_series(tmp_path / "real.npy"))
    with pytest.raises(UserError, match="with noise are not supported"):
        load_config({"noise": ["none", "gain:0.5"], "targets": [{**target, "data": data}]})
    cfg = load_config({"targets": [{**target, "data": data}, {"kind": "simulated", "length": L}]})
    assert cfg["targets"][0]["plausible"] == 0.99 and "plausible" not in cfg["targets"][1]


def test_reference_data_of_the_wrong_length_is_one_line(tmp_path, capsys):
    # (run --data of another length is resampled to the model's, with a note: issue 15's rule; real series
    # given to measure against are not, since they would no longer be the series they are)
    data, out_dir = _run_with_data(tmp_path, capsys, 40)
    np.save(tmp_path / "short.npy", np.load(data)[:, : L // 2])
    code, _, err = _run(["show", out_dir, "--reference-data", str(tmp_path / "short.npy")], capsys)
    assert code == 2 and "length" in err and len(err.strip().splitlines()) == 1, err
