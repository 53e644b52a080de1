"""The loop and the run store: budget, NaN, store layout, and exact resume after SIGKILL."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import zarr

import xdream_ts
from xdream_ts.adapters.simulated import GainNoise, PoissonNoise, SimulatedNeuron
from xdream_ts.decoders.basis import BasisDecoder
from xdream_ts.errors import UserError
from xdream_ts.optimizers import make_optimizer

ARRAYS = ("codes", "series", "scores", "objective", "clean_scores", "n_evaluated")


def _setup(seed=0, opt="genetic"):
    neuron = SimulatedNeuron(length=64, seed=2)
    return BasisDecoder(64, n_basis=8), PoissonNoise(neuron, scale=2.0, seed=seed + 100), opt


def test_budget_counts_presentations_and_store_layout(tmp_path):
    dec, scorer, opt = _setup()
    r = xdream_ts.run(dec, scorer, opt, budget=130, repeats=3, seed=0, store=tmp_path / "r.zarr", progress=False)
    assert r.presentations == 129  # 43 series x 3 repeats: the budget never overshoots
    assert r.generations == 3 and list(r.n_evaluated) == [20, 20, 3]
    g = zarr.open_group(str(tmp_path / "r.zarr"), mode="r")  # plain zarr reads it
    assert g["scores"].shape[1:] == (20, 3) and g["series"].shape[1:] == (20, 64)
    assert g.attrs["generations_completed"] == 3 and g.attrs["complete"] is True
    assert np.isnan(g["scores"][2, 3:]).all() and np.isfinite(g["scores"][2, :3]).all()
    assert "genetic" == g.attrs["config"]["optimizer"]["name"]
    assert "numpy" in g.attrs["versions"]
    # clean scores are recorded for simulated targets, and the best's clean score is reported
    assert r.clean_scores is not None and r.best_clean_score is not None
    loaded = xdream_ts.load_run(tmp_path / "r.zarr")
    assert loaded.best_score == r.best_score and loaded.presentations == 129
    np.testing.assert_array_equal(loaded.best_series, r.best_series)
    assert np.isclose(np.corrcoef(dec(r.best_code[None])[0], r.best_series)[0, 1], 1.0)


def test_no_pickle_in_the_store(tmp_path):
    dec, scorer, opt = _setup()
    xdream_ts.run(dec, scorer, opt, budget=60, store=tmp_path / "r.zarr", progress=False)
    for p in (tmp_path / "r.zarr").rglob("*"):
        if p.is_file():
            assert b"\x80\x04\x95" not in p.read_bytes()[:64], f"pickle header in {p}"


def test_existing_store_is_never_overwritten(tmp_path):
    dec, scorer, opt = _setup()
    xdream_ts.run(dec, scorer, opt, budget=40, store=tmp_path / "r.zarr", progress=False)
    before = xdream_ts.load_run(tmp_path / "r.zarr").codes.copy()
    with pytest.raises(UserError, match="already exists"):
        xdream_ts.run(dec, scorer, opt, budget=40, store=tmp_path / "r.zarr", progress=False)
    np.testing.assert_array_equal(xdream_ts.load_run(tmp_path / "r.zarr").codes, before)


def test_missing_responses_are_nan_and_tolerated():
    class Flaky:
        def __init__(self):
            self.inner = SimulatedNeuron(length=64, seed=1)
            self.calls = 0

        def __call__(self, series):
            s = self.inner(series)
            s[::4] = np.nan  # a quarter of the responses never arrive
            return s

    r = xdream_ts.run(BasisDecoder(64, 8), Flaky(), "genetic", budget=400, progress=False)
    assert r.summary()["missing_responses"] == 100
    assert np.isfinite(r.best_score)


def test_inf_scores_are_a_user_error():
    with pytest.raises(UserError, match="inf"):
        xdream_ts.run(BasisDecoder(64, 8), lambda s: np.full(len(s), np.inf), "random", budget=40, progress=False)


@pytest.mark.parametrize("opt", ["genetic", "fdgd", "nes", "random"])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, opt):
    """A run stopped after any generation and resumed is identical, array for array, to one never stopped."""
    dec, scorer, _ = _setup(opt=opt)
    full = xdream_ts.run(dec, scorer, make_optimizer(opt, dec.latent_dim, seed=5), budget=300, repeats=2,
                         store=tmp_path / "full.zarr", progress=False)

    class Stop(Exception):
        pass

    def stop_after_3(g, *_):
        if g == 3:
            raise Stop

    dec, scorer, _ = _setup(opt=opt)
    with pytest.raises(Stop):
        xdream_ts.run(dec, scorer, make_optimizer(opt, dec.latent_dim, seed=5), budget=300, repeats=2,
                      store=tmp_path / "cut.zarr", progress=False, callback=stop_after_3)
    dec, scorer, _ = _setup(opt=opt)  # a fresh process would build everything anew
    resumed = xdream_ts.run(dec, scorer, make_optimizer(opt, dec.latent_dim, seed=5), budget=300, repeats=2,
                            store=tmp_path / "cut.zarr", resume=True, progress=False)
    for name in ("codes", "series", "scores", "objective", "clean_scores"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(full, name), err_msg=name)


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    import xdream_ts
    from xdream_ts.adapters.simulated import PoissonNoise, SimulatedNeuron
    from xdream_ts.decoders.basis import BasisDecoder

    class Slow:  # a slow rig: each generation takes a while, so the kill lands mid-run
        length = 64
        def __init__(self):
            self.inner = PoissonNoise(SimulatedNeuron(length=64, seed=2), scale=2.0, seed=7)
            self.clean = self.inner.clean
            self.state_dict, self.load_state_dict = self.inner.state_dict, self.inner.load_state_dict
            self.noisy = True
        def __call__(self, series):
            time.sleep(0.03)
            return self.inner(series)

    slow = sys.argv[2] == "slow"
    scorer = Slow() if slow else PoissonNoise(SimulatedNeuron(length=64, seed=2), scale=2.0, seed=7)
    xdream_ts.run(BasisDecoder(64, n_basis=8), scorer, "genetic", budget=2400, repeats=2, seed=11,
                  store=sys.argv[1], resume=len(sys.argv) > 3, progress=False)
""")


def test_sigkill_mid_run_then_resume_is_bit_identical(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ref = tmp_path / "ref.zarr"
    subprocess.run([sys.executable, str(script), str(ref), "fast"], check=True, env=env, timeout=120)

    cut = tmp_path / "cut.zarr"
    proc = subprocess.Popen([sys.executable, str(script), str(cut), "slow"], env=env)
    deadline = time.time() + 90
    done = 0
    while time.time() < deadline:
        time.sleep(0.05)
        try:
            done = zarr.open_group(str(cut), mode="r").attrs["generations_completed"]
        except Exception:
            continue
        if done >= 8:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert done >= 8, "the run did not get far enough to be killed mid-run"

    before = xdream_ts.load_run(cut)
    assert not before.complete and 8 <= before.generations < 60
    snapshot = {n: getattr(before, n).copy() for n in ("codes", "scores", "objective", "clean_scores")}
    # resumed by a new process, with the fast scorer: the RNG states come from the store
    subprocess.run([sys.executable, str(script), str(cut), "fast", "resume"], check=True, env=env, timeout=120)

    a, b = xdream_ts.load_run(ref), xdream_ts.load_run(cut)
    assert b.complete and b.presentations == a.presentations == 2400
    for name in ("codes", "series", "scores", "objective", "clean_scores", "n_evaluated"):
        np.testing.assert_array_equal(getattr(b, name), getattr(a, name), err_msg=name)
    g_a = zarr.open_group(str(ref), mode="r")["state"][:]
    g_b = zarr.open_group(str(cut), mode="r")["state"][:]
    assert list(g_a) == list(g_b)
    for name, arr in snapshot.items():  # nothing recorded before the kill was lost or changed
        np.testing.assert_array_equal(getattr(b, name)[: len(arr)], arr)


def test_resume_with_larger_budget_extends_the_run(tmp_path):
    dec, scorer, opt = _setup()
    xdream_ts.run(dec, scorer, make_optimizer("genetic", 8, seed=1), budget=100, store=tmp_path / "r.zarr", progress=False)
    dec, scorer, opt = _setup()
    r = xdream_ts.run(dec, scorer, make_optimizer("genetic", 8, seed=1), budget=200, store=tmp_path / "r.zarr",
                      resume=True, progress=False)
    assert r.presentations == 200 and r.generations == 10


def test_gain_noise_statistics():
    neuron = SimulatedNeuron(length=32, seed=0)
    x = neuron.optimum()[None].repeat(20000, axis=0)
    noisy = GainNoise(neuron, sigma=0.5, seed=0)(x)
    assert abs(noisy.mean() / neuron.max_response - 1.0) < 0.02  # E[max(0, 1 + 0.5 N)] ~= 1.004
    poisson = PoissonNoise(neuron, scale=1.0, seed=0)(x)
    assert abs(poisson.var() - neuron.max_response) < 0.5  # Poisson: variance = mean


def test_resume_counts_presentations_from_committed_generations(tmp_path):
    """A stale presentations counter (a kill between metadata writes) must not add a generation."""
    dec, scorer, _ = _setup()
    full = xdream_ts.run(dec, scorer, make_optimizer("genetic", 8, seed=2), budget=200, store=tmp_path / "a.zarr",
                         progress=False)

    def stop_after_4(g, *_):
        if g == 4:
            raise KeyboardInterrupt

    dec, scorer, _ = _setup()
    with pytest.raises(KeyboardInterrupt):
        xdream_ts.run(dec, scorer, make_optimizer("genetic", 8, seed=2), budget=200, store=tmp_path / "b.zarr",
                      progress=False, callback=stop_after_4)
    g = zarr.open_group(str(tmp_path / "b.zarr"), mode="r+")
    g.update_attributes({"presentations": 60})  # one generation behind the commit marker
    dec, scorer, _ = _setup()
    resumed = xdream_ts.run(dec, scorer, make_optimizer("genetic", 8, seed=2), budget=200,
                            store=tmp_path / "b.zarr", resume=True, progress=False)
    assert resumed.generations == full.generations == 10
    np.testing.assert_array_equal(resumed.codes, full.codes)


@pytest.mark.parametrize("budget", [400, 390])  # 390: the budget cuts the last generation short
def test_returned_run_equals_the_run_read_back_from_disk(tmp_path, budget):
    """The finished run is returned from the writer's in-memory mirror: it must be what is on disk."""
    from xdream_ts.adapters.simulated import SimulatedNeuron, with_noise
    scorer = with_noise(SimulatedNeuron(length=64, seed=1), "poisson", seed=2)
    got = xdream_ts.run("basis:8", scorer, "genetic", budget=budget, repeats=2, store=tmp_path / "r.zarr",
                        progress=False)
    disk = xdream_ts.load_run(tmp_path / "r.zarr")
    for name in ("codes", "series", "scores", "objective", "clean_scores", "n_evaluated"):
        a, b = getattr(got, name), getattr(disk, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_optimizer_params_reach_an_optimizer_given_by_name(tmp_path):
    dec, scorer, _ = _setup()
    r = xdream_ts.run(dec, scorer, "default", budget=48, seed=0, store=tmp_path / "p.zarr", progress=False,
                      optimizer_params={"population_size": 8, "explore": 0.0})
    g = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    described = g.attrs["config"]["optimizer"]
    assert described["population_size"] == 8 and described["noisy"] is True  # the loop still says noisy
    assert described["budget"] == 48 and r.generations == 6
    with pytest.raises(UserError, match="optimizer given by name"):
        xdream_ts.run(dec, scorer, make_optimizer("default", 8, seed=0), budget=16, progress=False,
                      optimizer_params={"population_size": 8})
