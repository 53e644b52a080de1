"""The lab-rig service: the steppable search in-process, then over real HTTP driven by the reference client,
with a service killed (SIGKILL) and restarted mid-run."""
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import zarr

import xdream_ts
from xdream_ts.optimizers import make_optimizer
from xdream_ts.adapters.simulated import SimulatedNeuron
from xdream_ts.decoders import make_decoder
from xdream_ts.errors import UserError
from xdream_ts.rig import RigConfig, RigError, RigSearch, create_app, load_config

REPO = Path(__file__).resolve().parents[1]
L = 40


def _client_module():
    spec = importlib.util.spec_from_file_location("rig_client", REPO / "experiments" / "rig_client.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _config(tmp_path, **kw):
    base = dict(decoder="basis:6", length=L, optimizer="genetic", budget=200, repeats=2, seed=3,
                out=str(tmp_path / "rig.zarr"), timeout_s=5.0, block_size=16)
    return RigConfig(**{**base, **kw})


def _answer_all(search, neuron, rng, block=13):
    """A perfect rig: every stimulus answered once, blocks of random size, answers shuffled."""
    while not search.done:
        b = search.next_block(int(rng.integers(1, block)))
        items = [(s["id"], float(neuron(np.asarray(s["series"], np.float32)[None])[0])) for s in b["stimuli"]]
        rng.shuffle(items)
        if items:
            search.post_responses(items)


# ---------------------------------------------------------------------------------------------------
# The search, in-process
# ---------------------------------------------------------------------------------------------------
def test_rig_search_writes_the_same_run_as_the_loop(tmp_path):
    neuron = SimulatedNeuron(length=L, seed=1)
    search = RigSearch(_config(tmp_path, budget=190))
    _answer_all(search, neuron, np.random.default_rng(0))
    rig = xdream_ts.load_run(tmp_path / "rig.zarr")
    # the rig treats its responses as noisy (a measured neuron): the GA in its recording set-up
    decoder = make_decoder("basis:6", length=L)
    genetic = make_optimizer("genetic", decoder.latent_dim, seed=3, noisy=True)
    loop = xdream_ts.run(decoder, neuron, genetic, budget=190, repeats=2, seed=3, progress=False)
    assert rig.complete and rig.presentations == loop.presentations == 190
    assert list(rig.n_evaluated) == list(loop.n_evaluated) == [20, 20, 20, 20, 15]
    np.testing.assert_allclose(rig.codes, loop.codes, atol=1e-12)
    np.testing.assert_allclose(rig.objective, loop.objective, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(rig.scores, loop.scores, atol=1e-12, equal_nan=True)
    assert rig.attrs["rig_counters"]["accepted"] == 190 and rig.attrs["rig_counters"]["missing"] == 0


def test_blocks_interleave_repeats_in_a_seeded_order(tmp_path):
    def order(seed, name):
        s = RigSearch(_config(tmp_path, seed=seed, out=str(tmp_path / name)))
        return [st["id"] for st in s.next_block(40)["stimuli"]]
    a, b, c = order(3, "a.zarr"), order(3, "b.zarr"), order(4, "c.zarr")
    assert a == b and a != c and sorted(a) == sorted(c) and len(set(a)) == 40
    repeats = [int(i.rsplit("-r", 1)[1]) for i in a]
    assert repeats[:20] != sorted(repeats[:20])  # repeats mixed, not all r0 then all r1


def test_duplicates_late_unknown_ids_and_timeouts(tmp_path):
    clock = Clock()
    s = RigSearch(_config(tmp_path, timeout_s=5.0), clock=clock)
    ids = [st["id"] for st in s.next_block(40)["stimuli"]]
    assert s.next_block(10)["stimuli"] == [] and s.next_block(10)["wait_s"] > 0  # all out, waiting
    with pytest.raises(RigError, match="unknown stimulus ids: g0-p20-r0"):
        s.post_responses([(ids[0], 1.0), ("g0-p20-r0", 2.0)])
    assert s.status()["answered"] == 0  # refused whole: nothing recorded
    with pytest.raises(RigError, match="not finite"):
        s.post_responses([(ids[0], float("inf"))])
    r = s.post_responses([(ids[0], 1.0), (ids[0], 9.0), (ids[1], None)] + [(i, 3.0) for i in ids[2:30]])
    assert r == {"accepted": 30, "duplicates": 1, "late": 0, "generation": 0, "generation_complete": False}
    assert s.post_responses([(ids[0], 7.0)])["duplicates"] == 1
    clock.t += 4.9
    assert not s.tick()
    clock.t += 0.2  # the 10 unanswered presentations time out: the generation closes with NaN
    assert s.tick() and s.g == 1
    assert s.post_responses([(ids[2], 5.0)]) == {"accepted": 0, "duplicates": 0, "late": 1, "generation": 1,
                                                  "generation_complete": False}
    scores = zarr.open_group(str(tmp_path / "rig.zarr"), mode="r")["scores"][0]
    p, rep = (int(x) for x in ids[0][4:].split("-r"))
    assert scores[p, rep] == 1.0  # the first response won
    assert np.isnan(scores).sum() == 11  # 10 timed out + 1 answered null
    assert s.counters == {"accepted": 30, "duplicates": 2, "late": 1, "missing": 10, "issued": 40}
    with pytest.raises(RigError, match="generation 1 has 20 members"):
        s.post_responses([("g2-p0-r0", 1.0)])


def test_restart_reissues_the_same_codes_and_keeps_the_responses_in(tmp_path):
    neuron = SimulatedNeuron(length=L, seed=1)
    rng = np.random.default_rng(5)
    a = RigSearch(_config(tmp_path))
    while a.g < 2:  # generations 0 and 1 complete
        b = a.next_block(16)
        a.post_responses([(st["id"], float(neuron(np.asarray(st["series"], np.float32)[None])[0]))
                          for st in b["stimuli"]])
    first = a.next_block(16)["stimuli"]  # generation 2: 16 handed out, 10 answered, then the service dies
    a.post_responses([(st["id"], 1.5) for st in first[:10]])
    codes = a.current.codes.copy()
    del a
    b = RigSearch(_config(tmp_path))  # restarted
    assert b.g == 2 and b.presentations == 80
    np.testing.assert_array_equal(b.current.codes, codes)  # the same generation again
    again = b.next_block(40)["stimuli"]
    ids = [st["id"] for st in again]
    assert len(ids) == 30 and not set(ids) & {st["id"] for st in first[:10]}  # answered ones stay answered
    assert set(ids) >= {st["id"] for st in first[10:]}  # handed out, unanswered: handed out again
    assert b.post_responses([(st["id"], 2.5) for st in again])["generation_complete"]
    _answer_all(b, neuron, rng)
    run = xdream_ts.load_run(tmp_path / "rig.zarr")
    assert run.complete and run.presentations == 200
    # the responses received before the crash are in the store, beside those received after it
    assert (run.scores[2] == 1.5).sum() == 10 and (run.scores[2] == 2.5).sum() == 30
    assert not (tmp_path / "rig.zarr.pending.json").exists()


def test_config_mistakes_are_one_line_user_errors(tmp_path, monkeypatch):
    cfg = tmp_path / "rig.toml"
    cfg.write_text('[rig]\ndecoder = "basis:6"\nlength = 40\nbudjet = 10\nout = "x.zarr"\n')
    with pytest.raises(UserError, match="unknown keys budjet"):
        load_config(cfg)
    cfg.write_text('decoder = "basis:6"\nlength = 40\n')
    with pytest.raises(UserError, match="`out`"):
        load_config(cfg)
    cfg.write_text('decoder = "basis:6"\nlength = 40\nout = "x.zarr"\ntimeout_s = 0\n')
    with pytest.raises(UserError, match="timeout_s"):
        load_config(cfg)
    monkeypatch.delenv("XDTS_RIG_NO_TOKEN", raising=False)
    with pytest.raises(UserError, match="XDTS_RIG_NO_TOKEN"):
        create_app(_config(tmp_path, token_env="XDTS_RIG_NO_TOKEN"))
    RigSearch(_config(tmp_path, budget=40))
    with pytest.raises(UserError, match="cannot resume .* optimizer"):
        RigSearch(_config(tmp_path, optimizer="random"))
    from xdream_ts.cli import main
    assert main(["rig", "--config", str(tmp_path / "none.toml")]) == 2


# ---------------------------------------------------------------------------------------------------
# Over HTTP
# ---------------------------------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """uvicorn serving the rig app in a thread (for the quick HTTP checks)."""

    def __init__(self, app):
        import uvicorn
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def test_http_validation_auth_and_openapi(tmp_path, monkeypatch):
    monkeypatch.setenv("XDTS_RIG_TOKEN", "rig-t0ken-77")
    srv = ThreadServer(create_app(_config(tmp_path, token_env="XDTS_RIG_TOKEN", max_body_bytes=20_000)))
    try:
        auth = {"Authorization": "Bearer rig-t0ken-77"}
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            schema = c.get("/openapi.json").json()
            assert {"/blocks", "/responses", "/status"} <= set(schema["paths"])
            assert c.get("/health").status_code == 200
            assert c.post("/blocks").status_code == 401
            assert c.post("/blocks", headers={"Authorization": "Bearer nope"}).status_code == 401
            b = c.post("/blocks", json={"max": 3}, headers=auth).json()
            assert len(b["stimuli"]) == 3 and len(b["stimuli"][0]["series"]) == L and b["generation"] == 0
            assert c.post("/blocks", headers=auth).status_code == 200  # body optional: block_size
            assert c.post("/blocks", json={"max": 0}, headers=auth).status_code == 422
            r = c.post("/responses", json={"responses": [{"id": "gen0", "value": 1}]}, headers=auth)
            assert r.status_code == 422 and "pattern" in r.text
            r = c.post("/responses", content='{"responses": [{"id": "g0-p0-r0", "value": NaN}]}',
                       headers={**auth, "Content-Type": "application/json"})
            assert r.status_code == 422
            r = c.post("/responses", json={"responses": [{"id": "g0-p99-r0", "value": 1.0}]}, headers=auth)
            assert r.status_code == 400 and "unknown stimulus ids: g0-p99-r0" in r.json()["detail"]
            big = {"responses": [{"id": "g0-p0-r0", "value": 1.0}] * 2000}
            r = c.post("/responses", json=big, headers=auth)
            assert r.status_code == 413 and "smaller batches" in r.json()["detail"]
            ok = c.post("/responses", json={"responses": [{"id": b["stimuli"][0]["id"], "value": 2.0}]}, headers=auth)
            assert ok.json()["accepted"] == 1
            assert c.get("/status", headers=auth).json()["answered"] == 1
    finally:
        srv.stop()


def _start_service(cfg_path, log_path, env):
    log = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "xdream_ts", "rig", "--config", str(cfg_path)], cwd=REPO,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_ready(url, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the rig service exited"
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the rig service did not come up")


def test_reference_client_drives_a_whole_run_through_a_service_restart(tmp_path):
    token = "S3cret-rig-Token-9"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = tmp_path / "rig.toml"
    cfg.write_text(f'[rig]\ndecoder = "basis:6"\nlength = {L}\noptimizer = "genetic"\nbudget = 200\nrepeats = 2\n'
                   f'seed = 7\nout = "{tmp_path / "rig.zarr"}"\ntimeout_s = 1.0\nblock_size = 16\n'
                   f'port = {port}\ntoken_env = "XDTS_RIG_TOKEN"\n')
    env = {**os.environ, "XDTS_RIG_TOKEN": token}
    log_path = tmp_path / "service.log"
    procs = [_start_service(cfg, log_path, env)]
    seen: dict[str, list] = {}
    killed = {}

    def on_block(block):
        for st in block["stimuli"]:
            seen.setdefault(st["id"], []).append(st["series"])
        if block["generation"] == 2 and block["stimuli"] and not killed:
            # Both sides crash while the rig holds a block of generation 2: SIGKILL the service and
            # start it again, and the rig loses the block. The new service hands out generation 2 again.
            killed["block"] = [st["id"] for st in block["stimuli"]]
            os.killpg(procs[0].pid, signal.SIGKILL)
            procs[0].wait(timeout=30)
            procs.append(_start_service(cfg, log_path, env))
            return False

    try:
        _wait_ready(url, procs[0])
        client = _client_module()
        counts = client.drive(url, L, neuron_seed=2, token=token, block_size=16, drop=0.08, duplicate=0.1,
                              late=0.05, late_after_s=2.0, delay=(0.0, 0.004), seed=1, down_for_s=60,
                              max_seconds=240,
                              on_block=on_block)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=30)
    assert killed and counts["reconnects"] >= 1 and len(procs) == 2 and counts["lost_blocks"] == 1
    assert counts["dropped"] > 0 and counts["duplicated"] > 0 and counts["held_late"] > 0
    service = counts["service"]
    assert service["done"] and service["presentations"] == 200
    run = xdream_ts.load_run(tmp_path / "rig.zarr")
    assert run.complete and run.generations == 5 and run.presentations == 200
    # Every id handed out twice (before and after the restart) showed the same series: same codes.
    twice = {i: s for i, s in seen.items() if len(s) > 1}
    assert set(twice) == set(killed["block"]) and all(np.array_equal(s[0], s[1]) for s in twice.values())
    for i in killed["block"]:
        p = int(i.split("-p")[1].split("-")[0])
        np.testing.assert_array_equal(run.series[2, p], np.asarray(seen[i][0], np.float32))
    c = run.attrs["rig_counters"]
    assert c["duplicates"] >= 1 and c["missing"] >= 1 and c["late"] >= 1  # held 2 s > timeout_s 1 s
    assert int(np.isnan(run.scores).sum()) == c["missing"] == run.summary()["missing_responses"]
    assert np.isfinite(run.objective).sum() >= 90  # most members have at least one response
    # the token: not in the service's log, not anywhere in the store (raw files, config, every state)
    text = log_path.read_text()
    assert "generation 4 complete" in text and "POST /responses" in text and token not in text
    for f in (tmp_path).rglob("*"):
        if f.is_file() and f.name != "rig.toml":
            assert token.encode() not in f.read_bytes(), f
    assert token not in json.dumps(run.attrs)
    assert all(token not in s for s in zarr.open_group(str(tmp_path / "rig.zarr"), mode="r")["state"][:].tolist())


def test_rig_data_set_the_stimulus_units(tmp_path):
    # a sensor in raw units around 50 with spread 5: the rig hands out stimuli in those units
    rng = np.random.default_rng(0)
    X = 50 + 5 * np.sin(np.linspace(0, 6, L))[None] * rng.uniform(0.5, 1.5, (40, 1)) + rng.normal(0, 1, (40, L))
    np.save(tmp_path / "series.npy", X.astype(np.float32))
    s = RigSearch(_config(tmp_path, decoder="auto", data=str(tmp_path / "series.npy")))
    block = np.asarray([st["series"] for st in s.next_block(16)["stimuli"]])
    assert 30 < block.mean() < 70 and block.min() >= X.min() - 0.1 * np.ptp(X) - 1e-3
    assert s.session.cfg["decoder"]["space"]["kind"] == "data"
