"""workers.check: every step's model built on meta, probed on the CPU, flagged when wrong."""

from __future__ import annotations

import pytest
import torch

import workers.check as check_module
from models.config import GPTConfig
from models.gpt2 import GPT
from models.presets import PRESETS, TOKENIZER_VOCAB
from orchestrator.core.loader import spec_from_text
from orchestrator.core.plan import StudyPlan
from orchestrator.core.resolve import Overrides, resolve
from workers.check import CheckError, StepCheck, check_model, check_plan

HEAD = """
study: chk
defaults:
  model: {preset: tiny}
  data: {dataset: kjv, tokenizer: byte}
  train: {budget: {seconds: 10}}
  seeds: [1, 2]
steps:
  V0: {description: baseline}
"""


def plan(steps_yaml: str, preset: str | None = None) -> StudyPlan:
    spec = spec_from_text(HEAD + steps_yaml, file="chk.yaml")
    return resolve(spec, presets=PRESETS, vocab=TOKENIZER_VOCAB, overrides=Overrides(preset=preset),
                   source="chk.yaml")


def by_step(checks: list[StepCheck]) -> dict[str, StepCheck]:
    return {c.step: c for c in checks}


@pytest.mark.slow
def test_valid_steps_pass_with_counts_ratio_causality_and_mechanisms():
    p = plan("""
  V1: {parent: V0, attention: {mla: {latent_dim: 32, ra_alpha: 0.3}}}
  V2: {parent: V1, mlp: {reciprocal_mlp: {gate: true, cross: true, cross_rank: 16, recip: true}}}
  V3: {parent: V1, attention: {mla: {latent_dim: 32, ra_ct: entropy, ra_ct_apply: weights}}}
""")
    checks = check_plan(p)
    assert [c.step for c in checks] == ["V0", "V1", "V2", "V3"]  # first run of each step only
    c = by_step(checks)
    assert all(x.ok and x.error is None and x.causal for x in checks), [x.error for x in checks]
    assert c["V0"].mechanisms_active is None and c["V0"].mechanisms == "causal + gelu"
    assert c["V1"].mechanisms_active and c["V2"].mechanisms_active and c["V3"].mechanisms_active
    # parameter counts are the full-size model's (meta), by part
    model = dict(p.runs[[r.step for r in p.runs].index("V2")].config["model"])
    model.pop("preset")
    with torch.device("meta"):
        want = GPT(GPTConfig.from_dict(model)).param_counts()
    assert c["V2"].params == {k: v for k, v in want.items() if k != "attn_mlp_ratio_x1000"}
    assert c["V2"].params["mechanism"] > 0
    assert c["V2"].attn_mlp_ratio == pytest.approx(want["mlp"] / want["attention"])
    assert c["V0"].attn_mlp_ratio == pytest.approx(2.0, rel=0.01)  # GPT-2: 8E^2+.. vs 4E^2+..
    assert c["V2"].mechanisms == "mla(latent_dim=32, ra_alpha=0.3) + reciprocal_mlp(gate, cross, cross_rank=16, recip)"
    assert c["V0"].probe == "L2 H4 E32 T32"


def test_bad_knobs_and_names_are_one_line_errors_naming_the_part():
    checks = by_step(check_plan(plan("""
  V1: {parent: V0, mlp: {reciprocal_mlp: {gates: true}}}
  V2: {parent: V0, attention: {mla2: {}}}
  V3: {parent: V0, mlp: {reciprocal_mlp: {recip: true}}}
  V4: {parent: V0, attention: {mla: {ra_ct: mean}}}
""")))
    assert checks["V0"].ok
    e = {s: checks[s].error for s in ("V1", "V2", "V3", "V4")}
    assert e["V1"].startswith("mlp.reciprocal_mlp: unknown knob 'gates' for mlp mechanism 'reciprocal_mlp' (known: gate, ")
    assert e["V2"].startswith("attention: unknown attn mechanism 'mla2' (known: causal, ")
    assert e["V3"].startswith("mlp.reciprocal_mlp: recip (mechanism 3)") and "use attention 'mla'" in e["V3"]
    assert e["V4"] == "attention.mla: ra_ct must be one of topk, max, entropy, rms or null, got 'mean'"
    for s in ("V1", "V2", "V3", "V4"):
        assert not checks[s].ok and "\n" not in e[s] and checks[s].causal is None
    # the same, as data (the submit path maps it to the YAML path without reading the text)
    at = {s: checks[s].error_at for s in ("V1", "V2", "V4")}
    assert at["V1"] == CheckError(part="mlp", slot="mlp", mechanism="reciprocal_mlp",
                                  knob="gates", message=e["V1"].removeprefix("mlp.reciprocal_mlp: "))
    assert at["V2"] == CheckError(part="attention", slot="attention", mechanism="mla2",
                                  message=e["V2"].removeprefix("attention: "))
    assert at["V4"] is not None and (at["V4"].slot, at["V4"].mechanism, at["V4"].knob) == (
        "attention", "mla", None)


def test_a_future_leak_fails_the_step():
    c = by_step(check_plan(plan("""
  V1: {parent: V0, attention: {mla: {}}, mlp: {reciprocal_mlp: {gate: true, noncausal_gate: true}}}
""")))["V1"]
    assert c.causal is False and not c.ok
    assert c.error.startswith("probe: not causal")


@pytest.mark.slow
def test_an_enabled_knob_that_changes_nothing_fails_and_forced_gates_only_warn():
    checks = by_step(check_plan(plan("""
  V1: {parent: V0, attention: {mla: {}}, mlp: {reciprocal_mlp: {cross_rank: 8}}}
  V2: {parent: V0, attention: {mla: {}}, mlp: {reciprocal_mlp: {gate: true, force_gates_open: true}}}
""")))
    v1, v2 = checks["V1"], checks["V2"]
    assert v1.mechanisms_active is False and not v1.ok
    assert v1.error == ("probe: mlp.reciprocal_mlp.cross_rank=8 changes neither the output nor a "
                        "training step (same weights with cross_rank=None; probed at E32, E64, E128)")
    assert v1.error_at is not None and (v1.error_at.part, v1.error_at.slot, v1.error_at.mechanism,
                                        v1.error_at.knob) == ("probe", "mlp", "reciprocal_mlp",
                                                              "cross_rank")
    assert v2.ok and v2.mechanisms_active is True
    assert any("force_gates_open makes it the identity" in w for w in v2.warnings)


@pytest.mark.slow
def test_identical_models_are_flagged_with_knob_defaults_filled_in():
    checks = by_step(check_plan(plan("""
  V1: {parent: V0, attention: {mla: {}}}
  V2: {parent: V0, attention: {mla: {latent_dim: 64, ra_alpha: 0.0}}}
  V3: {parent: V0, attention: {mla: {latent_dim: 32}}}
  V4: {parent: V0, train: {lr: 1.0e-3}}
""")))
    assert checks["V1"].identical_to is None
    assert checks["V2"].identical_to == "V1"
    assert checks["V3"].identical_to is None
    assert checks["V4"].identical_to == "V0"
    assert all(c.ok for c in checks.values())


@pytest.mark.slow
def test_steps_filter_and_big_models_probe_at_a_shrunken_size():
    p = plan("""
  V1: {parent: V0, attention: {mla: {latent_dim: 128, ra_alpha: 0.3}},
       mlp: {reciprocal_mlp: {gate: true, cross: true, recip: true, tying_mode: per_head_scalar}}}
""", preset="gpt2-124m")
    checks = check_plan(p, steps=["V1"])
    assert [c.step for c in checks] == ["V1"]
    c = checks[0]
    assert c.ok, c.error
    assert c.probe == "L2 H12 E96 T32"
    # full size on meta: 12 layers of MLA L=128 (1,572,864 each, §2)
    assert c.params["attention"] == 12 * 1_572_864


def test_check_model_accepts_a_resolved_model_dict_directly():
    model = dict(preset=None, n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=320,
                 dropout=0.1, bias=True, mlp_expansion=4.0, attn="causal", attn_knobs={},
                 mlp="gelu", mlp_knobs={})
    c = check_model(model, step="X")
    assert c.ok and c.causal and c.mechanisms_active is None
    assert c.params["total"] == sum(c.params[k] for k in ("embedding", "attention", "mlp", "mechanism", "norm"))
    bad = check_model(dict(model, n_head=5), step="X")
    assert not bad.ok and bad.error.startswith("model: n_embd (64) must be divisible by n_head (5)")


@pytest.mark.slow
def test_a_post_train_knob_is_not_probed_in_the_forward_but_said_so():
    # KVSplice (C1-C3) acts through the trainer's post_train hook on the trained model; the
    # forward probe must neither call it inert nor stay silent about it
    checks = by_step(check_plan(plan("""
  V19: {parent: V0, attention: {kv_prune: {keep_ratio: 0.5, recency: 8}}}
  C1: {parent: V19, attention: {kv_prune: {keep_ratio: 0.5, recency: 8, kvsplice: {k: 8}}}}
""", preset="tiny"), steps=["C1"]))
    c1 = checks["C1"]
    assert c1.ok, c1.error
    assert any("kvsplice" in w and "post_train" in w for w in c1.warnings)


def test_a_fraction_knob_that_rounds_to_its_default_when_shrunk_is_judged_wider():
    # R_ff_frac 1/6 of D_ff: 64 (= the default R_ff) at the E96 probe, 512 at gpt2-124m; the
    # probe must not call it inert (issue 13 #1), and must say at which width it judged it
    p = plan("""
  V3: {parent: V0, mlp: {rmlp: {R_ff_frac: 0.1666667}}}
""", preset="gpt2-124m")
    c = check_plan(p, steps=["V3"], jobs=1)[0]
    assert c.ok, c.error
    assert c.probe == "L2 H12 E96 T32; mlp.rmlp.R_ff_frac at E192"


def test_identical_models_are_probed_once_and_repeat_checks_hit_the_cache(monkeypatch):
    calls: list[str] = []
    real = check_module.check_model

    def counting(model, *, step=""):
        calls.append(model["mlp"])
        return real(model, step=step)

    monkeypatch.setattr(check_module, "check_model", counting)
    monkeypatch.setattr(check_module, "_CACHE", {})
    p = plan("""
  V1: {parent: V0, mlp: {rmlp: {R_ff: 16}}}
  V2: {parent: V0, train: {lr: 1.0e-3}}
  V3: {parent: V1, train: {lr: 1.0e-3}}
""")
    seen: list[tuple[int, int, str]] = []
    first = by_step(check_plan(p, jobs=1, progress=lambda d, t, s: seen.append((d, t, s))))
    assert sorted(calls) == ["gelu", "rmlp"]  # two distinct models among four steps
    assert seen == [(1, 2, "V0"), (2, 2, "V1")]
    assert first["V2"].identical_to == "V0" and first["V3"].identical_to == "V1"
    assert first["V3"].step == "V3" and first["V3"].params == first["V1"].params
    again = by_step(check_plan(p, jobs=1))
    assert len(calls) == 2  # the second check of the same plan probes nothing
    assert again == first


def test_parallel_probes_give_the_serial_results():
    p = plan("""
  V1: {parent: V0, attention: {mla: {latent_dim: 32}}}
  V2: {parent: V0, mlp: {rmlp: {R_ff: 16, use_mixer: true}}}
""")
    check_module._CACHE.clear()
    serial = check_plan(p, jobs=1)
    check_module._CACHE.clear()
    parallel = check_plan(p, jobs=2)
    assert serial == parallel and all(c.ok for c in parallel)
