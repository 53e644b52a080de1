"""The model's own data set the stimulus space (issue 15): a multichannel model that takes raw units,
its data given with --data, and the search in those units, started from the data."""
from __future__ import annotations

import json

import numpy as np
import pytest

from xdream_ts.cli import main
from xdream_ts.loop import load_run

torch = pytest.importorskip("torch")

C, L = 3, 48
LOC = np.array([100.0, -5.0, 0.02])    # a pressure, a voltage, a strain: nothing like z-normalised
SCALE = np.array([20.0, 2.0, 0.004])


class RawUnitsNet(torch.nn.Module):
    """Standardisation inside the graph, as an exported sensor model has it, then a small CNN."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.register_buffer("loc", torch.tensor(LOC, dtype=torch.float32).view(1, C, 1))
        self.register_buffer("scale", torch.tensor(SCALE, dtype=torch.float32).view(1, C, 1))
        self.conv = torch.nn.Conv1d(C, 8, 5, padding=2)
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x):
        h = torch.relu(self.conv((x - self.loc) / self.scale))
        return self.fc(h.mean(dim=2)) + 2.0  # positive logits: relative activation is a ratio of positives


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("raw")
    path = d / "raw.onnx"
    torch.onnx.export(RawUnitsNet().eval(), torch.randn(2, C, L), str(path), input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    rng = np.random.default_rng(1)
    t = np.linspace(0, 1, L)
    waves = np.sin(2 * np.pi * (rng.uniform(1, 4, (120, C, 1)) * t + rng.uniform(0, 1, (120, C, 1))))
    X = LOC[None, :, None] + SCALE[None, :, None] * (waves + 0.3 * rng.standard_normal((120, C, L)))
    np.save(d / "data.npy", X.astype(np.float32))
    return path, d / "data.npy", X


def _run(capsys, argv):
    code = main(["run", "--no-progress", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_with_data_stimuli_live_in_the_data_units_and_beat_the_best_real_series(tmp_path, capsys, model_and_data):
    model, data, X = model_and_data
    code, out, err = _run(capsys, ["--model", str(model), "--layer", "logits", "--unit", "0", "--data", str(data),
                                   "--budget", "400", "--out", str(tmp_path / "r.zarr")])
    assert code == 0, err
    r = load_run(tmp_path / "r.zarr")
    assert r.config["data"]["space"] == "data" and r.config["decoder"]["space"]["kind"] == "data"
    shown = r.series[np.isfinite(r.series).all(axis=(2, 3))]
    lo, hi = X.min(axis=(0, 2)), X.max(axis=(0, 2))
    margin = 0.1 * (hi - lo)  # the stated margin of the data space
    assert (shown.min(axis=(0, 2)) >= lo - margin - 1e-4 * np.abs(lo)).all()
    assert (shown.max(axis=(0, 2)) <= hi + margin + 1e-4 * np.abs(hi)).all()
    # the per-channel level is the data's, not zero
    assert (np.abs(shown.mean(axis=(0, 2)) - LOC) < 3 * SCALE).all(), shown.mean(axis=(0, 2))
    s = json.loads(json.dumps(r.summary()))
    best_real = r.config["data"]["best_real_score"]
    assert r.reference_max == pytest.approx(best_real)  # relative activation against the user's data
    assert s["relative_activation"] > 1.0, s  # a super stimulus, in the model's own units


def test_the_first_generation_holds_the_encoded_best_real_series(tmp_path, capsys, model_and_data):
    model, data, X = model_and_data
    code, _, err = _run(capsys, ["--model", str(model), "--layer", "logits", "--unit", "1", "--data", str(data),
                                 "--budget", "120", "--out", str(tmp_path / "s.zarr")])
    assert code == 0, err
    r = load_run(tmp_path / "s.zarr")
    info = r.config["init_info"]
    assert info["n"] == 10 and info["source"].endswith("data.npy")
    from xdream_ts.targets import TargetSpec, build
    clean = build(TargetSpec(model=str(model), units=["logits:1"])).clean
    real = clean(X[info["indices"]].astype(np.float32))
    first = r.objective[0]
    P = len(first)
    # the best real series stands last, the others before it (best first), decoded from their codes
    decoded = np.concatenate([first[P - 1:], first[P - 10:P - 1]])
    spread = np.ptp(clean(X.astype(np.float32)))
    # PCA keeps 99 % of the variance: decoded responses within 10 % of the data's response range
    np.testing.assert_allclose(decoded, real, atol=0.1 * spread)
    assert r.best_score >= decoded.max()  # never below its best start
    assert r.best_score >= real.max() - 0.1 * spread


def test_without_data_a_multichannel_model_still_runs_and_says_what_data_would_do(tmp_path, capsys, model_and_data):
    model, _, _ = model_and_data
    code, out, err = _run(capsys, ["--model", str(model), "--budget", "60", "--out", str(tmp_path / "n.zarr")])
    assert code == 0, err
    assert "--data" in err and "z-normalised" in err
    r = load_run(tmp_path / "n.zarr")
    assert r.series.shape[2:] == (C, L) and "data" not in r.config


def test_data_with_the_wrong_channels_is_one_line(tmp_path, capsys, model_and_data):
    model, _, X = model_and_data
    np.save(tmp_path / "two.npy", X[:, :2])
    code, _, err = _run(capsys, ["--model", str(model), "--data", str(tmp_path / "two.npy"), "--budget", "40",
                                 "--out", str(tmp_path / "w.zarr")])
    assert code == 2 and "channel" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "w.zarr").exists()


def test_a_run_started_from_the_data_resumes_bit_identically(tmp_path, model_and_data):
    import xdream_ts
    from xdream_ts.targets import TargetSpec

    model, data, _ = model_and_data
    spec = TargetSpec(model=str(model), units=["logits:0"], data=str(data))
    full = xdream_ts.run("auto", spec, "default", budget=200, store=tmp_path / "full.zarr", progress=False)
    class Crash(Exception):
        pass

    def crash(generation, *_):
        if generation == 2:
            raise Crash  # the process dies after committing generation 2 (a write-behind flush included)

    with pytest.raises(Crash):
        xdream_ts.run("auto", spec, "default", budget=200, store=tmp_path / "part.zarr", progress=False, callback=crash)
    resumed = xdream_ts.run("auto", spec, "default", budget=200, store=tmp_path / "part.zarr", resume=True,
                            progress=False)
    np.testing.assert_array_equal(resumed.codes, full.codes)
    np.testing.assert_array_equal(resumed.objective, full.objective)
    assert resumed.config["init_info"] == full.config["init_info"]
