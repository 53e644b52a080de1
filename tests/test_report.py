"""`xdream-ts report`: on a run and on a sweep it writes the expected figures (valid PNG files that read
back with a nonzero size) and a markdown report whose numbers agree with the run stores."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import xdream_ts
from xdream_ts import report as rp
from xdream_ts import sweep as sw
from xdream_ts.adapters.simulated import PoissonNoise, SimulatedNeuron
from xdream_ts.cli import main as cli_main
from xdream_ts.decoders.basis import BasisDecoder
from xdream_ts.errors import UserError

from test_sweep import tiny_onnx_model

PNG = b"\x89PNG\r\n\x1a\n"
L = 64


def assert_png(path: Path) -> None:
    import matplotlib.image as mpimg
    assert path.is_file(), f"{path} missing"
    assert path.read_bytes()[:8] == PNG, f"{path} is not a PNG file"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert float(np.std(img[..., :3])) > 0.01  # something is drawn, not a blank canvas


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report_sweep")
    model = tiny_onnx_model(tmp / "tiny.onnx")
    cfg = {"budget": 120, "seeds": 2, "decoders": ["basis:8"], "optimizers": ["genetic", "random"],
           "noise": ["none", "poisson:4"], "providers": "cpu",
           "targets": [{"kind": "simulated", "length": L, "seed": 1, "reference_max": 6.0},
                       {"kind": "onnx", "model": str(model), "layer": "block1/out", "units": [2],
                        "reference_max": 0.5}]}
    return sw.sweep(cfg, tmp / "sweep", executor="serial", progress=False), model


def test_report_on_a_run(tmp_path):
    neuron = SimulatedNeuron(length=L, seed=3)
    r = xdream_ts.run(BasisDecoder(L, 8), PoissonNoise(neuron, scale=3.0, seed=1), "genetic", budget=400,
                      store=tmp_path / "r.zarr", progress=False, reference_max=5.0)
    res = rp.report(tmp_path / "r.zarr", tmp_path / "rep")
    names = sorted(p.name for p in (tmp_path / "rep").iterdir())
    assert names == ["best_vs_real_run.png", "gallery_run.png", "report.md", "trajectories.png"]
    for f in res["figures"]:
        assert_png(f)
    md = (tmp_path / "rep" / "report.md").read_text()
    # the reported series (under noise the GA's conserved code, not its luckiest response): its clean response
    reported_clean = float(r.clean_objective[r.reported_index])
    assert reported_clean == pytest.approx(r.relative_activation * 5.0)
    assert f"{reported_clean:.3g}" in md and f"{r.relative_activation:.3g}" in md
    for f in res["figures"]:
        assert f"]({f.name})" in md  # every figure is linked from the markdown
    info = rp.read_run(tmp_path / "r.zarr")
    assert info.best_clean == pytest.approx(reported_clean) and info.presentations == 400
    # the trajectory ends at the clean activation of the best-observed series
    assert info.trajectory[-1] == pytest.approx(r.best_clean_score)
    # galleries use log-spaced generations, first and last included
    assert rp.__name__ and xdream_ts.plots.log_spaced_generations(20, 8)[0] == 0
    assert xdream_ts.plots.log_spaced_generations(20, 8)[-1] == 19


def test_report_on_a_sweep_writes_violins_tables_and_the_best_real_series(small_sweep, tmp_path):
    result, model = small_sweep
    assert len(result.done) == 16 and not result.failed
    rng = np.random.default_rng(0)
    real = rng.standard_normal((50, L)).astype(np.float32)
    res = rp.report(result.path, tmp_path / "rep", reference_data=real)
    out = tmp_path / "rep"
    expected = {"trajectories.png", "violin_relative.png", "violin_normalized.png", "report.md"}
    for target in ("sim1-L64", "tiny-block1_out_2_center"):
        expected |= {f"gallery_{target}.png", f"best_vs_real_{target}.png"}
    assert {p.name for p in out.iterdir()} == expected
    for f in res["figures"]:
        assert_png(f)
    md = (out / "report.md").read_text()
    assert "## Presentations until the first super stimulus" in md and "best of 50 reference series" in md
    # the numbers in the tables are those of the run stores
    infos = rp.collect(result.path)[1]
    rp.normalize_runs(infos)
    for target in {i.target for i in infos}:  # normalized activation: the best run of a unit is 1
        assert max(i.best_value for i in infos if i.target == target) > 0
        assert max(i.normalized for i in infos if i.target == target) == pytest.approx(1.0)
    rows = {(r["noise"], r["optimizer"]): r for r in rp.first_super_table(infos)}
    for (noise, opt), row in rows.items():
        per_unit = {}
        for e in result.entries.values():
            p = e["params"]
            if p["noise"] == noise and p["optimizer_label"] == opt:
                v = e["first_super_presentation"]
                per_unit.setdefault(p["target_label"], []).append(math.inf if v is None else v)
        med = float(np.median([np.median(v) for v in per_unit.values()]))
        assert row["median_presentations"] == (med if math.isfinite(med) else None)
        assert row["units"] == 2
    # the best real series of an ONNX target is the best of the given data under the same target
    from xdream_ts.adapters.onnx import OnnxScorer, Target
    best = max((i for i in infos if i.target == "tiny-block1/out:2@center"), key=lambda i: i.best_value)
    x, score, label = rp.real_series_for(best, real)
    scores = OnnxScorer(model, Target("block1/out", 2, "center"), providers="cpu")(real)
    assert score == pytest.approx(scores.max()) and np.array_equal(x, real[int(np.argmax(scores))])


def test_report_cli_and_errors(tmp_path, capsys):
    xdream_ts.run(BasisDecoder(L, 8), SimulatedNeuron(length=L, seed=2), "random", budget=100,
                  store=tmp_path / "r.zarr", progress=False)
    code = cli_main(["report", str(tmp_path / "r.zarr"), "--out", str(tmp_path / "cli")])
    assert code == 0 and "report.md (1 runs, 3 figures)" in capsys.readouterr().out
    assert_png(tmp_path / "cli" / "gallery_run.png")
    assert cli_main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xdream-ts:") and "does not exist" in err and len(err.splitlines()) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither a run store"):
        rp.report(tmp_path / "empty", tmp_path / "y")


def test_report_lists_unfinished_tasks(tmp_path):
    cfg = {"budget": 60, "decoders": ["basis:8"], "noise": ["none"],
           "optimizers": ["random", {"name": "genetic", "label": "bad", "mutation_rate": 2.0}],
           "targets": [{"kind": "simulated", "length": L}]}
    r = sw.sweep(cfg, tmp_path / "s", executor="serial", progress=False)
    res = rp.report(tmp_path / "s", tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert res["failures"] == 1 and "## Tasks not finished" in md and r.failed[0] in md


def test_report_on_the_shipped_model_uses_the_fordA_series(tmp_path):
    ref = pytest.importorskip("xdream_ts.reference")
    try:
        ref.reference_model_path()
        ref.sample_series()
    except (UserError, FileNotFoundError):
        pytest.skip("the shipped reference model is not installed yet")
    cfg = {"budget": 40, "decoders": ["basis:16"], "optimizers": ["genetic"], "providers": "cpu",
           "targets": [{"kind": "reference", "layer": "block2/out", "units": [0]}]}
    r = sw.sweep(cfg, tmp_path / "s", executor="serial", progress=False)
    rp.report(tmp_path / "s", tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "FordA" in md
    assert_png(tmp_path / "rep" / "best_vs_real_ref-block2_out_0_center.png")
