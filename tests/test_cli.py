"""The command line: a run from flags or TOML, show, and one-line errors with exit code 2."""
import json
import subprocess
import sys

import numpy as np
import pytest

from xdream_ts.cli import main


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_run_show_and_json(tmp_path, capsys):
    out_dir = tmp_path / "r.zarr"
    code, out, err = _run(["run", "--optimizer", "genetic", "--decoder", "basis", "--budget", "200",
                           "--noise", "poisson", "--repeats", "2", "--out", str(out_dir), "--no-progress"], capsys)
    assert code == 0, err
    assert "best score" in out
    code, out, _ = _run(["show", str(out_dir), "--json"], capsys)
    s = json.loads(out)
    assert code == 0 and s["presentations"] == 200 and s["optimizer"] == "genetic" and s["complete"] is True
    assert s["best_clean_score"] is not None and s["generations"] == 5


def test_toml_config_and_flag_override(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text('optimizer = "random"\nbudget = 100\ndecoder = "basis:16"\nnoise = "gain:0.5"\n')
    out_dir = tmp_path / "r.zarr"
    code, _, err = _run(["run", str(cfg), "--budget", "60", "--out", str(out_dir), "--no-progress"], capsys)
    assert code == 0, err
    code, out, _ = _run(["show", str(out_dir), "--json"], capsys)
    s = json.loads(out)
    assert s["optimizer"] == "random" and s["presentations"] == 60


def test_resume_from_the_cli(tmp_path, capsys):
    out_dir = str(tmp_path / "r.zarr")
    base = ["run", "--optimizer", "genetic", "--decoder", "basis", "--out", out_dir, "--no-progress"]
    assert _run(base + ["--budget", "100"], capsys)[0] == 0
    assert _run(base + ["--budget", "200", "--resume"], capsys)[0] == 0
    assert json.loads(_run(["show", out_dir, "--json"], capsys)[1])["presentations"] == 200


@pytest.mark.parametrize("argv, fragment", [
    (["run", "--bogus"], "unrecognized arguments"),
    (["run", "--budget", "ten"], "invalid int value"),
    (["run", "--budget", "0"], "positive integer"),
    (["run", "--optimizer", "genetc"], "did you mean 'genetic'"),
    (["run", "--noise", "poison"], "unknown noise"),
    (["run", "--noise", "gain:x"], "not a number"),
    (["run", "missing.toml"], "not found"),
    (["run", "--decoder", "nonsense"], "unknown decoder"),
    (["show", "no/such/run.zarr"], "no run store"),
    (["frobnicate"], "invalid choice"),
])
def test_user_errors_are_one_line_exit_2(argv, fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], err
    assert "Traceback" not in err


def test_bad_toml_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("budget = = 3\n")
    code, _, err = _run(["run", str(bad)], capsys)
    assert code == 2 and "not valid TOML" in err and len(err.strip().splitlines()) == 1
    bad.write_text("budgett = 3\n")
    code, _, err = _run(["run", str(bad)], capsys)
    assert code == 2 and "unknown keys budgett" in err


def test_resume_does_not_touch_an_existing_run_on_error(tmp_path, capsys):
    out_dir = str(tmp_path / "r.zarr")
    assert _run(["run", "--optimizer", "random", "--decoder", "basis", "--budget", "40", "--out", out_dir,
                 "--no-progress"], capsys)[0] == 0
    code, _, err = _run(["run", "--optimizer", "random", "--decoder", "basis", "--budget", "40", "--out", out_dir],
                        capsys)
    assert code == 2 and "already exists" in err
    code, _, err = _run(["run", "--optimizer", "genetic", "--decoder", "basis", "--budget", "80", "--out", out_dir,
                         "--resume"], capsys)
    assert code == 2 and "cannot resume" in err
    assert json.loads(_run(["show", out_dir, "--json"], capsys)[1])["presentations"] == 40


def test_version_and_entry_point():
    out = subprocess.run([sys.executable, "-m", "xdream_ts", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("xdream-ts ")


def test_import_is_light():
    code = "import sys, xdream_ts; bad = {'torch', 'nevergrad', 'onnxruntime'} & set(sys.modules); print(sorted(bad))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


def _tiny_onnx(path):
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(1, 4, 5, padding=2)
            self.head = torch.nn.Linear(4, 3)

        def forward(self, x):
            h = torch.relu(self.conv(x))
            return self.head(h.mean(dim=-1))

    torch.manual_seed(0)
    torch.onnx.export(Net().eval(), torch.randn(2, 1, 64), str(path), input_names=["series"],
                      output_names=["logits"], dynamic_axes={"series": {0: "batch"}, "logits": {0: "batch"}},
                      dynamo=False)
    return path


def test_inspect_and_a_two_target_contrast_run(tmp_path, capsys):
    import zarr
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    code, out, err = _run(["inspect", str(model), "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info["input"]["length"] == 64
    hidden = [t["name"] for t in info["tensors"] if t["kind"] == "channels-time"]
    assert hidden, info
    out_dir = tmp_path / "r.zarr"
    code, _, err = _run(["run", "--model", str(model), "--target", "logits:0", "--target", "logits:2",
                         "--objective", "contrast", "--optimizer", "genetic", "--decoder", "basis:8",
                         "--budget", "80", "--out", str(out_dir), "--no-progress"], capsys)
    assert code == 0, err
    g = zarr.open_group(str(out_dir), mode="r")
    scores, objective = g["scores"][:], g["objective"][:]
    assert scores.shape[-1] == 2  # every target's score is kept, not only the combined one
    np.testing.assert_allclose(objective, scores[:, :, 0, 0] - scores[:, :, 0, 1])
    code, _, err = _run(["run", "--model", str(model), "--layer", "nope", "--out", str(tmp_path / "x.zarr")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "inspect" in err


def test_noisy_default_run_reports_its_incumbent(tmp_path, capsys):
    """Under gain noise the default optimizer's pick (mean over several presentations) is shown by `show`."""
    out_dir = tmp_path / "r.zarr"
    code, _, err = _run(["run", "--decoder", "basis:16", "--budget", "800", "--noise", "gain:0.5",
                         "--out", str(out_dir), "--no-progress"], capsys)
    assert code == 0, err
    code, out, _ = _run(["show", str(out_dir), "--json"], capsys)
    s = json.loads(out)
    inc = s["incumbent"]
    assert s["optimizer"] == "default" and inc["measurements"] >= 2
    from xdream_ts.loop import load_run
    r = load_run(out_dir)
    # the recorded place holds the incumbent's series, and its clean score is that series' clean score
    assert inc["clean_score"] == pytest.approx(float(r.clean_objective[inc["generation"], inc["member"]]))
    # the optimizer planned its step decay over this run's budget, not its own default
    assert r.config["optimizer"]["budget"] == 800
    # relative activation is that of the reported series (the incumbent), not of the luckiest response
    assert r.reported_index == (inc["generation"], inc["member"])
    assert s["relative_activation"] == pytest.approx(inc["clean_score"] / s["reference_max"])
    code, out, _ = _run(["show", str(out_dir)], capsys)
    assert "incumbent      mean" in out


def test_show_plausibility_on_the_shipped_model(tmp_path, capsys):
    pytest.importorskip("xdream_ts.reference")
    out_dir = tmp_path / "r.zarr"
    code, _, err = _run(["run", "--optimizer", "random", "--budget", "40", "--out", str(out_dir), "--no-progress"],
                        capsys)
    assert code == 0, err
    code, out, err = _run(["show", str(out_dir), "--plausibility", "--json"], capsys)
    assert code == 0, err
    p = json.loads(out)["plausibility"]
    assert p["layer"] == "gap" and p["best_distance"] > 0 and 0 <= p["best_percentile"] <= 100
    code, out, _ = _run(["show", str(out_dir), "--plausibility"], capsys)
    assert "Mahalanobis" in out
    # a layer the model does not have: one line, exit 2, and the run is untouched
    code, _, err = _run(["show", str(out_dir), "--layer", "no_such_tensor"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert load_run_presentations(out_dir) == 40


def load_run_presentations(path):
    from xdream_ts.loop import load_run
    return load_run(path).presentations


def test_dream_from_the_cli_uses_the_shipped_models_torch_twin(tmp_path, capsys):
    pytest.importorskip("xdream_ts.reference")
    out_dir = tmp_path / "d.zarr"
    code, out, err = _run(["run", "--optimizer", "dream", "--layer", "block2/out", "--unit", "3", "--budget", "40",
                           "--out", str(out_dir), "--no-progress"], capsys)
    assert code == 0, err
    assert "optimizer dream" in out and "relative act." in out
    # with noise there is no gradient to follow: one line, exit 2, nothing written
    code, _, err = _run(["run", "--optimizer", "dream", "--noise", "poisson", "--budget", "40",
                         "--out", str(tmp_path / "n.zarr"), "--no-progress"], capsys)
    assert code == 2 and "gradients" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "n.zarr").exists()


def test_optimizer_parameters_from_flags_and_toml(tmp_path, capsys):
    out_dir = tmp_path / "p.zarr"
    code, _, err = _run(["run", "--decoder", "basis:8", "--optimizer", "default", "--param", "population_size=24",
                         "--param", "sigma0=0.5", "--budget", "96", "--out", str(out_dir), "--no-progress"], capsys)
    assert code == 0, err
    code, out, _ = _run(["show", str(out_dir), "--json"], capsys)
    from xdream_ts.loop import load_run
    r = load_run(out_dir)
    assert r.codes.shape[1] == 24 and r.config["optimizer"]["sigma0"] == 0.5 and r.generations == 4
    cfg = tmp_path / "g.toml"
    cfg.write_text('optimizer = "genetic"\nbudget = 60\ndecoder = "basis:8"\n[optimizer_params]\npopulation_size = 12\n')
    code, _, err = _run(["run", str(cfg), "--out", str(tmp_path / "g.zarr"), "--no-progress"], capsys)
    assert code == 0, err
    assert load_run(tmp_path / "g.zarr").codes.shape[1] == 12
    # a parameter the optimizer does not take: one line naming the ones it does, exit 2
    code, _, err = _run(["run", "--optimizer", "genetic", "--param", "sigma0=1", "--out", str(tmp_path / "x.zarr"),
                         "--no-progress"], capsys)
    assert code == 2 and "population_size" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(["run", "--param", "oops", "--out", str(tmp_path / "y.zarr")], capsys)
    assert code == 2 and "KEY=VALUE" in err


def test_start_from_the_real_series_the_target_likes_best(tmp_path, capsys):
    pytest.importorskip("xdream_ts.reference")
    out_dir = tmp_path / "i.zarr"
    code, _, err = _run(["run", "--optimizer", "genetic", "--layer", "block2/out", "--unit", "0", "--init", "best",
                         "--init-n", "5", "--budget", "40", "--out", str(out_dir), "--no-progress"], capsys)
    assert code == 0, err
    from xdream_ts.loop import load_run
    from xdream_ts.reference import sample_series
    r = load_run(out_dir)
    info = r.config["init_info"]  # where the run started from (--init or --data)
    assert info["which"] == "best" and info["n"] == 5 and info["ranked"] == 300
    X = sample_series()[0]
    # the first members of generation 0 are the encoded best real series, in rank order
    for member, index in enumerate(info["indices"]):
        assert np.corrcoef(r.series[0, member], X[index])[0, 1] > 0.8
    code, _, err = _run(["run", "--optimizer", "random", "--init", "best", "--out", str(tmp_path / "x.zarr")], capsys)
    assert code == 2 and "--init" in err


def test_a_noiseless_run_says_nothing_about_measurements(tmp_path, capsys):
    # the default keeps an incumbent even without noise; measured once, it is simply the best response
    code = main(["run", "--budget", "60", "--decoder", "basis:8", "--out", str(tmp_path / "r.zarr"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "over 1 presentations" not in out and "incumbent      mean" not in out
