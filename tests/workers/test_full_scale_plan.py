"""Every shipped spec plans at FULL scale, as the user types it (issue 13 #1): the model of
every step is built on meta at its real size and probed on the CPU; no `--preset tiny`."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "ablations").glob("*.yaml"))


def test_there_are_shipped_specs() -> None:
    assert len(SPECS) >= 7 and any(p.stem == "rmlp_prune" for p in SPECS)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_plans_at_full_scale(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli.app import run

    rc = run(["queue", "submit", str(path), "--plan"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "Nothing queued (--plan)." in err
    assert "error" not in err.lower()
    if path.stem == "rmlp_prune":  # R_ff_frac 1/6 rounds to the default R_ff at the E96 probe
        assert "R_ff_frac=0.1666667" in out
