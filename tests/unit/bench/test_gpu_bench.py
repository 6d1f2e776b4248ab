"""`python -m bench gpu` at CPU size (tiny shape, a few steps, fp32 fallback), so the GPU
check cannot rot before a GPU runs it; and it stays importable on a device image that has
torch but no SQLAlchemy, Ray or rich."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, sys
from bench import gpu_bench
rc = gpu_bench.main(sys.argv[1:])
print("PROBE", json.dumps({"rc": rc, "loaded": sorted(m for m in ("sqlalchemy", "ray", "rich",
    "orchestrator", "typer", "wandb") if m in sys.modules)}))
"""


def test_cpu_smoke_run_measures_every_variant_and_imports_only_models_and_trainer(tmp_path: Path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, "-c", PROBE, "--cpu-smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")), None)
    assert line is not None, proc.stdout[-2000:] + proc.stderr[-2000:]
    probe = json.loads(line[len("PROBE "):])
    assert probe == {"rc": 0, "loaded": []}, probe
    res = json.loads(out.read_text())
    assert res["precision"] == "fp32" and res["peak_flops"] is None  # the CPU fallback
    rows = {r["variant"]: r for r in res["variants"]}
    assert "baseline" in rows and rows["baseline"]["x_baseline"] == 1.0
    ok = [r for r in res["variants"] if "ms_per_step" in r]
    assert len(ok) == len(res["variants"]) >= 10, [r for r in res["variants"] if "error" in r]
    for r in ok:
        assert r["ms_per_step"] > 0 and r["tokens_per_s"] > 0 and r["flops_per_token"] > 0
        assert r["sdpa"] in {"flash", "efficient", "cudnn", "math", "none"} or "+" in r["sdpa"]
    assert rows["baseline"]["sdpa"] != "none"  # the baseline calls SDPA
    assert {o["optimizer"] for o in res["optimizers"]} == {"adamw", "adamwspam"}
    check = res["loss_check"]
    assert check["ok"] and check["steps"] == 3 and check["fp32"] > 0
