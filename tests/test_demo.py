"""The README's first command, in a reduced mode: the demo runs end to end on the shipped model."""
import pytest

from xdream_ts.cli import main


def test_demo_end_to_end_reduced(tmp_path, capsys):
    pytest.importorskip("xdream_ts.reference")
    from xdream_ts.reference import reference_model_path
    reference_model_path()  # the shipped model must be in the package
    code = main(["demo", "--out", str(tmp_path / "demo"), "--budget", "40", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith(("block", "logits"))]
    assert len(rows) == 8  # 4 units at 4 depths x (genetic, default)
    assert {"genetic", "default"} <= {r.split()[1] for r in rows}
    assert "plots written to" in out
    pngs = list((tmp_path / "demo" / "plots").rglob("*.png"))
    assert len(pngs) >= 3 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert len(list((tmp_path / "demo" / "runs").glob("*.zarr"))) == 8
