"""`recip check` shows the widths each step builds and names frozen parameters that never act
(i14; mechanisms.md §5, §18(f))."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.config import GPTConfig
from models.presets import PRESETS, TOKENIZER_VOCAB
from models.widths import widths
from orchestrator.cli.check_cmd import render_widths
from orchestrator.core.loader import load_spec
from orchestrator.core.resolve import Overrides, resolve
from workers.check import check_model

ABLATIONS = Path(__file__).resolve().parents[2] / "ablations"
FULL = dict(preset="gpt2-124m", n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304,
            dropout=0.0, bias=True, mlp_expansion=4.0, attn="causal", attn_knobs={}, mlp="gelu", mlp_knobs={})


def _firsts(name: str, preset: str | None = None) -> dict[str, dict]:
    path = ABLATIONS / name
    plan = resolve(load_spec(path), presets=PRESETS, vocab=TOKENIZER_VOCAB,
                   overrides=Overrides(preset=preset), source=str(path))
    out: dict[str, dict] = {}
    for run in plan.runs:
        out.setdefault(run.step, run.config["model"])
    return out


def test_the_four_golden_ratio_mla_steps_build_2560():
    models = _firsts("ratio_ablation.yaml")
    for step in ("9", "11", "14", "15"):
        cfg = GPTConfig.from_dict({k: v for k, v in models[step].items() if k != "preset"})
        assert widths(cfg)["D_ff"] == 2560, step


def test_check_reports_widths_and_warns_on_unaligned_widths_at_full_scale():
    c = check_model(dict(FULL, d_ff=2500), step="W")
    assert c.ok and c.widths["D_ff"] == 2500
    assert any("not a multiple of 64: D_ff 2500" in w for w in c.warnings)
    assert "W" in render_widths([c]) and "D_ff 2500" in render_widths([c])
    small = check_model(dict(FULL, preset="tiny", n_layer=2, n_head=4, n_embd=128, block_size=128, d_ff=100))
    assert not any("multiple of 64" in w for w in small.warnings)


def test_check_names_frozen_parameters_that_never_act():
    forced = dict(FULL, n_layer=3, attn="mla", attn_knobs={"latent_dim": 128},
                  mlp="reciprocal_mlp", mlp_knobs={"gate": True, "force_gates_open": True})
    c = check_model(forced, step="19")
    assert set(c.frozen_inert) == {"transformer.h.*.mlp.gate_proj.weight", "transformer.h.*.mlp.gate_proj.bias",
                                   "transformer.h.*.mlp.gate_to_heads.weight",
                                   "transformer.h.*.mlp.gate_to_heads.bias"}
    assert c.frozen_inert["transformer.h.*.mlp.gate_proj.weight"] == 2 * 3072 * 64  # no gate in the last block
    assert any("frozen parameter(s) never act" in w for w in c.warnings)
    # a frozen parameter that acts (V17's w_rec, frozen at its init) is not named
    v17 = check_model(dict(FULL, n_layer=2, mlp="rmlp", mlp_knobs={"R_ff": 64, "w_rec_frozen": True}))
    assert v17.frozen_inert == {}


@pytest.mark.parametrize("name", ["kv_compression.yaml", "rmlp_prune.yaml"])
def test_shipped_kv_steps_keep_heavy_hitters_at_tiny(name):
    from models.mechanisms.kv_prune import Knobs

    for step, m in _firsts(name, preset="tiny").items():
        if m["attn"] == "kv_prune":
            cfg = GPTConfig.from_dict({k: v for k, v in m.items() if k != "preset"})
            assert Knobs(**m["attn_knobs"]).warnings(cfg) == [], step


def test_check_warns_when_a_kv_step_is_only_a_sliding_window():
    tiny = dict(FULL, preset="tiny", n_layer=2, n_head=4, n_embd=128, block_size=128,
                attn="kv_prune", attn_knobs={"keep_ratio": 0.382, "recency": 64})
    c = check_model(tiny)
    assert any("pure sliding window" in w for w in c.warnings)


def test_recip_check_prints_the_widths_of_every_step(tmp_path, capsys):
    from orchestrator.cli.app import run

    spec = tmp_path / "w.yaml"
    spec.write_text("""
study: w
defaults:
  model: {preset: tiny}
  data: {dataset: kjv, tokenizer: byte}
  train: {budget: {seconds: 10}}
  seeds: [1]
steps:
  V0: {description: baseline}
  V1: {parent: V0, model: {mlp_expansion: 3.3333333333}}
""")
    assert run(["check", str(spec)]) == 0
    _out, err = capsys.readouterr()
    lines = [line.split() for line in err.splitlines() if line.startswith("  V")]
    assert ["V0", "n_embd", "128", "head_dim", "32", "D_ff", "512"] == lines[0]
    assert lines[1][:7] == ["V1", "n_embd", "128", "head_dim", "32", "D_ff", "427"]  # round(426.67)
