"""`xdream-ts compare`: matched model evaluations, the table, the plots, one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
from torch import nn  # noqa: E402

from xdream_ts.compare import parse_dream, compare, measure_backward_cost  # noqa: E402
from xdream_ts.errors import UserError  # noqa: E402
from xdream_ts.adapters.onnx import OnnxScorer  # noqa: E402

L = 64
torch.set_num_threads(1)


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 8, 7, padding=3), nn.ReLU(), nn.Conv1d(8, 6, 5, padding=2), nn.ReLU(),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(6, 2)).eval()


def real_like(n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, L)
    x = np.sin(2 * np.pi * (rng.uniform(1, 3, (n, 1)) * t + rng.uniform(0, 1, (n, 1)))) + 0.05 * rng.standard_normal((n, L))
    return ((x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_net()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    torch.onnx.export(model, (torch.randn(2, 1, L),), str(path), dynamo=False, input_names=["series"],
                      output_names=["out"], dynamic_axes={"series": {0: "batch"}, "out": {0: "batch"}},
                      opset_version=17)
    return model, path


def test_compare_at_matched_model_evaluations(exported, tmp_path):
    model, path = exported
    logs = []
    res = compare(model=path, target="out:1", torch_module=model, optimizers=["random", "genetic", "dream"],
                  evaluations=120, seeds=(0, 1), out=tmp_path / "cmp", decoder="basis:8", backward_cost=2.0,
                  reference_data=real_like(150), dream={"population_size": 4, "tv": 0.05}, log=logs.append)
    rows = res["rows"]
    assert [r["optimizer"] for r in rows] == ["random", "random", "genetic", "genetic", "dream", "dream"]
    for r in rows:
        assert r["evaluations"] <= 120
        if r["optimizer"] == "dream":
            # 120 evaluations at 1 + 2 per code and step: 40 presentations = 10 steps of 4 restarts
            assert r["presentations"] == 40 and r["n_backward"] == 40 and r["evaluations"] == 120.0
        else:
            assert r["presentations"] == 120
        assert r["mahalanobis"] > 0 and 0 <= r["percentile"] <= 100
    out = tmp_path / "cmp"
    saved = json.loads((out / "results.json").read_text())
    assert saved["backward_cost"] == 2.0 and len(saved["table"]) == 3
    table = (out / "table.md").read_text()
    assert "| dream |" in table and "Mahalanobis" in table
    for png in ("curves.png", "best_series.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert len(list((out / "runs").glob("*.zarr"))) == 6
    # the curve's last point is at the evaluations used
    ev, best = res["curves"]["dream"][0]
    assert ev[-1] == pytest.approx(120.0) and best == sorted(best)
    with pytest.raises(UserError, match="not empty"):
        compare(model=path, target="out:1", optimizers=["random"], evaluations=10, seeds=(0,), out=out)


def test_backward_cost_is_measured(exported):
    from xdream_ts.adapters.torch import TorchScorer

    sc = TorchScorer(exported[0], "3:2@center", length=L, channels=1)
    m = measure_backward_cost(sc, batch=4, reps=3)
    assert m["backward_cost"] > 0 and m["forward_backward_s"] > m["forward_s"] > 0


def test_dream_on_an_onnx_model_needs_a_torch_version(exported, tmp_path):
    try:
        import onnx2torch  # noqa: F401
        pytest.skip("onnx2torch is installed: the ONNX model converts")
    except ImportError:
        pass
    from xdream_ts.cli import main

    rc = main(["compare", "--model", str(exported[1]), "--target", "out:0", "--optimizers", "random,dream",
               "--evaluations", "20", "--seeds", "1", "--out", str(tmp_path / "c")])
    assert rc == 2


def test_cli_errors_are_one_line(exported, tmp_path, capsys):
    from xdream_ts.cli import main

    for argv, fragment in [
        (["--model", str(exported[1]), "--optimizers", "random"], "--target"),
        (["--model", str(exported[1]), "--target", "out:0", "--optimizers", "nope"], "unknown optimizer"),
        (["--model", str(exported[1]), "--target", "out:0", "--dream", "tv"], "KEY=VALUE"),
    ]:
        rc = main(["compare", *argv, "--out", str(tmp_path / "c")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and fragment in err and "\n" not in err, err
    assert parse_dream("l2=0.01,population_size=6") == {"l2": 0.01, "population_size": 6}
    with pytest.raises(UserError, match="unknown parameter"):
        parse_dream("speed=3")


def test_compare_with_the_models_data_fits_auto_and_measures_against_the_best_real(exported, tmp_path):
    _, path = exported
    X = real_like(120, seed=3)
    np.save(tmp_path / "real.npy", X)
    res = compare(model=path, target="out:1", optimizers=["random"], evaluations=40, seeds=(0,),
                  out=tmp_path / "cmp", reference_data=str(tmp_path / "real.npy"), log=lambda *_: None)
    from xdream_ts.loop import load_run
    run = load_run(next((tmp_path / "cmp" / "runs").glob("*.zarr")))
    best_real = float(np.max(OnnxScorer(path, "out:1")(X)))
    assert run.reference_max == pytest.approx(best_real, rel=1e-5)
    assert run.config["decoder"]["spec"] == "auto" and len(res["rows"]) == 1
