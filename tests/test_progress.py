"""Progress off a terminal (CI, a log file, a notebook) is a few plain lines, never carriage returns."""
import os

import numpy as np
import pytest

from xdream_ts.progress import PLAIN_LINES, progress_bar


def _lines(err: str) -> list[str]:
    assert "\r" not in err and "\x1b" not in err  # no redraws, no terminal escapes
    return [line for line in err.split("\n") if line]


def test_plain_lines_off_a_terminal(capsys):
    bar = progress_bar(total=3000, unit="pres", desc="run")
    for g in range(150):
        bar.update(20)
        bar.set_postfix_str(f"gen {g} best {g / 10:.4g}")
    bar.close()
    bar.close()  # closing twice says nothing more
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == PLAIN_LINES and lines[-1].startswith("run: 3000/3000 pres (100%)")
    assert lines[0].startswith("run: 300/3000 pres (10%)")
    assert lines[0].endswith("gen 14 best 1.4")  # the postfix set right after that step's update
    # a resumed task counts its tenths from where it starts; an early stop still ends with a line
    with progress_bar(total=60, unit="epoch", desc="train", initial=30) as bar:
        for _ in range(10):
            bar.update(1)
    lines = _lines(capsys.readouterr().err)
    assert 3 <= len(lines) <= PLAIN_LINES + 1 and lines[-1].startswith("train: 40/60 epoch (67%)")


def test_disabled_says_nothing_and_an_unstarted_task_says_nothing(capsys):
    bar = progress_bar(total=10, unit="it", enabled=False)
    bar.update(10)
    bar.close()
    progress_bar(total=10, unit="it").close()  # failed before its first step
    assert capsys.readouterr().err == ""
    assert bar.n == 10


def test_a_terminal_gets_a_tqdm_bar(monkeypatch):
    import sys

    from tqdm import tqdm
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty:
        monkeypatch.setattr(sys, "stderr", tty)
        bar = progress_bar(total=5, unit="it", desc="tty")
        assert isinstance(bar, tqdm)
        bar.update(5)
        bar.close()
    os.close(master)


def test_train_decoder_writes_a_few_lines_into_a_log(tmp_path, capfd):
    pytest.importorskip("torch")
    from xdream_ts.train_decoder import train_decoder
    t = np.linspace(0, 1, 32)
    X = np.stack([np.sin(2 * np.pi * (2 + i % 5) * t + i) for i in range(40)])
    train_decoder(X, tmp_path / "dec", latent_dim=4, epochs=30, seed=0, widths=(8, 16, 16, 16), batch_size=16,
                  patience=100, progress=True)
    lines = [line for line in _lines(capfd.readouterr().err) if line.startswith("train-decoder:")]
    assert len(lines) == PLAIN_LINES  # the issue: 120 carriage-return updates in one line for 60 epochs
    assert lines[-1].startswith("train-decoder: 30/30 epoch (100%)") and "val_mse=" in lines[-1]


def test_inverse_set_writes_a_few_lines_into_a_log(capfd):
    from xdream_ts.adapters.simulated import SimulatedNeuron
    from xdream_ts.decoders.basis import BasisDecoder
    from xdream_ts.inverse_set import inverse_set
    neuron = SimulatedNeuron(length=32, seed=1)
    inverse_set(BasisDecoder(32, 8), neuron, (2.0, 6.0), n=40, method="free", seed=0, budget=2000, progress=True)
    lines = [line for line in _lines(capfd.readouterr().err) if line.startswith("inverse set")]
    assert 1 <= len(lines) <= PLAIN_LINES + 1 and "pres" in lines[-1]
