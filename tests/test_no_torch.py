"""Everything but gradients and training works without torch (torch is the extra ``xdream-ts[torch]``).

A fresh venv without torch costs minutes of downloads (onnxruntime, dask, matplotlib, scikit-learn) and
the system python has none of them, so the commands run in a subprocess of the project's interpreter
in which ``import torch`` fails as it does where torch is not installed: a ``sys.meta_path`` finder
raises ModuleNotFoundError for torch and its submodules before any other finder looks. The sweep runs
serially (worker processes would not inherit the hook). At the end the process must not hold torch.
"""
import json
import subprocess
import sys
import textwrap

import pytest

from xdream_ts.errors import TORCH_INSTALL

DRIVER = textwrap.dedent(r'''
    import contextlib, io, json, sys

    class NoTorch:  # as if torch were not installed
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoTorch())
    from xdream_ts.cli import main

    results = {}
    for key, argv in json.loads(sys.argv[1]):
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main(argv)
            except SystemExit as exc:  # --help and friends
                code = exc.code
            except Exception as exc:  # a bug: recorded, so that one failing command does not hide the others
                import traceback
                code, _ = "exception", err.write(traceback.format_exc())
        results[key] = {"code": code, "err": err.getvalue(), "out": out.getvalue()}

    # the lab-rig service's search, driven in-process by a simulated rig, with the shipped ONNX decoder
    import numpy as np
    from xdream_ts.adapters.simulated import SimulatedNeuron
    from xdream_ts.rig import RigConfig, RigSearch
    neuron = SimulatedNeuron(length=500, seed=1)
    search = RigSearch(RigConfig(decoder="default", length=500, optimizer="genetic", budget=40, seed=0,
                                 out=sys.argv[2] + "/rig.zarr", timeout_s=5.0, block_size=16))
    while not search.done:
        block = search.next_block(16)
        search.post_responses([(s["id"], float(neuron(np.asarray(s["series"], np.float32)[None])[0]))
                               for s in block["stimuli"]])
    # and the HTTP service around it (what `xdream-ts rig` serves)
    from fastapi.testclient import TestClient
    from xdream_ts.rig import create_app
    app = create_app(RigConfig(decoder="default", length=500, optimizer="genetic", budget=40, seed=0,
                               out=sys.argv[2] + "/rig-http.zarr", timeout_s=5.0, block_size=16))
    with TestClient(app) as client:
        got = client.post("/blocks", json={"max": 4})
    results["rig"] = {"code": 0 if got.status_code == 200 else got.status_code, "err": got.text, "out": ""}
    # the gradient inverse-set sampler called from Python: the same one line
    from xdream_ts.decoders.basis import BasisDecoder
    from xdream_ts.errors import UserError
    from xdream_ts.inverse_set import inverse_set
    try:
        inverse_set(BasisDecoder(500, 8), neuron, (1.0, 2.0), n=5, method="gradient", progress=False)
        results["inverse_gradient_lib"] = {"code": 0, "err": "", "out": ""}
    except UserError as exc:
        results["inverse_gradient_lib"] = {"code": 2, "err": str(exc), "out": ""}
    # encoding by optimisation: the shipped decoder's torch bridge is refused in one line, CMA-ES steps in
    from xdream_ts.decoders.encode import encode
    from xdream_ts.decoders.onnx_decoder import load_default_decoder
    codes = encode(load_default_decoder(), neuron.optimum()[None],
                   method="opt", steps=3)
    results["encode_opt"] = {"code": 0 if np.isfinite(codes).all() else 1, "err": "", "out": ""}
    results["torch_modules"] = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print("RESULTS" + json.dumps(results))
''')


@pytest.mark.slow
def test_onnx_only_commands_work_without_torch_and_the_others_say_how_to_install_it(tmp_path):
    from xdream_ts.reference import reference_model_path
    import numpy as np
    model = str(reference_model_path())
    t = np.linspace(0, 1, 64)
    np.save(tmp_path / "series.npy", np.stack([np.sin(2 * np.pi * (2 + i % 5) * t + i) for i in range(40)]))
    (tmp_path / "sweep.toml").write_text(textwrap.dedent(f'''
        name = "no-torch"
        budget = 40
        seeds = [0]
        decoders = ["default"]
        optimizers = ["genetic"]
        noise = ["none"]
        [[targets]]
        kind = "onnx"
        model = "{model}"
        layer = "logits"
        units = [1]
    '''))
    r, i = str(tmp_path / "r.zarr"), str(tmp_path / "i.zarr")
    calls = [
        ("inspect", ["inspect", model]),
        ("run", ["run", "--budget", "60", "--out", r, "--no-progress"]),  # shipped model, shipped ONNX decoder
        ("run_init", ["run", "--budget", "40", "--init", "best", "--out", i, "--no-progress"]),  # its ONNX encoder
        ("show", ["show", r]),
        ("report", ["report", r, "--out", str(tmp_path / "report")]),
        ("sweep", ["sweep", str(tmp_path / "sweep.toml"), "--out", str(tmp_path / "sweep"), "--executor", "serial",
                   "--no-progress"]),
        ("inverse_free", ["inverse-set", "--range", "0.5", "1.0", "--relative", "--n", "5", "--budget", "200",
                          "--method", "free", "--out", str(tmp_path / "inv.zarr"), "--no-progress"]),
        # what needs torch: one line, exit code 2, nothing written
        ("dream", ["run", "--optimizer", "dream", "--budget", "20", "--out", str(tmp_path / "d.zarr")]),
        ("train", ["train-decoder", "--data", str(tmp_path / "series.npy"), "--out", str(tmp_path / "dec"),
                   "--epochs", "1", "--quiet"]),
        ("inverse_gradient", ["inverse-set", "--range", "0.5", "1.0", "--relative", "--n", "5", "--method",
                              "gradient", "--out", str(tmp_path / "inv2.zarr"), "--no-progress"]),
    ]
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(calls), str(tmp_path)], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.split("RESULTS", 1)[1])
    assert res.pop("torch_modules") == []
    for key in ("inspect", "run", "run_init", "show", "report", "sweep", "inverse_free", "rig", "encode_opt"):
        assert res[key]["code"] == 0, (key, res[key]["err"][-2000:])
    assert "logits" in res["inspect"]["out"] and "complete       True" in res["run"]["out"]
    assert "complete       True" in res["show"]["out"]
    for key, what in (("dream", "--optimizer dream"), ("train", "train-decoder"), ("inverse_gradient", "gradient"),
                      ("inverse_gradient_lib", "gradient")):
        err = res[key]["err"].strip()
        assert res[key]["code"] == 2 and "\n" not in err and "Traceback" not in err, (key, err)
        assert TORCH_INSTALL in err and what in err, (key, err)
    assert not (tmp_path / "d.zarr").exists() and not (tmp_path / "dec").exists()
