"""Resolution: inheritance, deep merge, presets, seeds, hashes and command-line overrides."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from models.presets import PRESETS, TOKENIZER_VOCAB
from orchestrator.core import ids
from orchestrator.core.errors import SpecError, UnknownStep
from orchestrator.core.plan import StudyPlan
from orchestrator.core.resolve import (
    Overrides,
    check_error_location,
    deep_merge,
    parse_set,
    resolve,
)
from orchestrator.core.spec import Spec

BASE: dict[str, Any] = {
    "study": "ra_quick",
    "description": "RA and R-MLP against the baseline",
    "defaults": {
        "model": {"preset": "tiny"},
        "data": {"dataset": "kjv", "tokenizer": "gpt2"},
        "train": {"budget": {"seconds": 60}, "lr": 6e-4, "warmup": 20},
        "optimizer": {"name": "adamwspam"},
        "seeds": [1, 2],
    },
    "steps": {
        "V0": {"description": "baseline"},
        "V1": {"parent": "V0", "attention": {"ra": {"R": 4}},
               "expect": {"best_val_loss": [3.5, 3.6]}},
        "V3": {"parent": "V1", "mlp": {"rmlp": {"R_ff": 64}},
               "train": {"batch_size": 4, "budget": {"iters": 500}}},
    },
}

ARCH_KEYS = {
    "": ["study", "step", "seed", "model", "data", "train", "optimizer", "wandb"],
    "model": ["preset", "n_layer", "n_head", "n_embd", "block_size", "vocab_size", "dropout",
              "bias", "mlp_expansion", "attn", "attn_knobs", "mlp", "mlp_knobs"],
    "train": ["budget", "batch_size", "grad_accum", "lr", "min_lr", "warmup",
              "schedule_horizon", "max_iters", "weight_decay", "grad_clip", "eval_every",
              "eval_batches", "log_every", "checkpoint_every", "stats_every",
              "coupling_warmup", "device", "dtype", "compile"],
    "optimizer": ["name", "betas", "eps", "amsgrad", "spam"],
}


def plan_of(data: dict[str, Any], **kw: Any) -> StudyPlan:
    return resolve(Spec.model_validate(data), presets=PRESETS, vocab=TOKENIZER_VOCAB, **kw)


def run(plan: StudyPlan, step: str, seed: int = 1) -> dict[str, Any]:
    return next(r.config for r in plan.runs if r.step == step and r.seed == seed)


def test_every_architecture_key_is_present_in_order() -> None:
    cfg = run(plan_of(BASE), "V0")
    assert list(cfg) == ARCH_KEYS[""]
    for section in ("model", "train", "optimizer"):
        assert list(cfg[section]) == ARCH_KEYS[section]
    assert cfg["train"]["budget"] == {"seconds": 60.0, "iters": None, "tokens": None}
    assert cfg["optimizer"]["spam"] == {"spike_clip_theta": 50.0, "spike_z": 2.0,
                                        "reset_interval": 1000, "rewarm_steps": 1000,
                                        "legacy_double_count": False, "spike_test_previous": False}
    assert cfg["wandb"] == {"mode": "offline", "project": None, "entity": None}
    assert cfg["data"] == {"dataset": "kjv", "tokenizer": "gpt2"}


def test_preset_sizes_and_tokenizer_vocab() -> None:
    m = run(plan_of(BASE), "V0")["model"]
    tiny = PRESETS["tiny"]
    assert (m["n_layer"], m["n_head"], m["n_embd"], m["block_size"]) == (
        tiny["n_layer"], tiny["n_head"], tiny["n_embd"], tiny["block_size"])
    assert m["vocab_size"] == TOKENIZER_VOCAB["gpt2"]
    data = copy.deepcopy(BASE)
    data["steps"]["V1"]["data"] = {"tokenizer": "byte"}
    data["steps"]["V1"]["model"] = {"n_layer": 2}
    p = plan_of(data)
    assert run(p, "V1")["model"]["vocab_size"] == TOKENIZER_VOCAB["byte"]
    assert run(p, "V1")["model"]["n_layer"] == 2
    assert run(p, "V3")["model"]["n_layer"] == 2  # inherited from V1
    assert run(p, "V0")["model"]["n_layer"] == tiny["n_layer"]


def test_inheritance_of_mechanisms_and_defaults() -> None:
    p = plan_of(BASE)
    v0, v1, v3 = (run(p, s)["model"] for s in ("V0", "V1", "V3"))
    assert (v0["attn"], v0["attn_knobs"], v0["mlp"], v0["mlp_knobs"]) == ("causal", {}, "gelu", {})
    assert (v1["attn"], v1["attn_knobs"], v1["mlp"]) == ("ra", {"R": 4}, "gelu")
    assert (v3["attn"], v3["attn_knobs"], v3["mlp"], v3["mlp_knobs"]) == (
        "ra", {"R": 4}, "rmlp", {"R_ff": 64})


def test_a_named_mechanism_replaces_the_parents_knobs() -> None:
    data = copy.deepcopy(BASE)
    data["steps"]["V3"]["attention"] = {"ra": {"R": 8}}
    data["steps"]["V0"]["attention"] = "causal"
    p = plan_of(data)
    assert run(p, "V3")["model"]["attn_knobs"] == {"R": 8}
    assert run(p, "V0")["model"]["attn"] == "causal"


def test_deep_merge_keeps_siblings() -> None:
    t3 = run(plan_of(BASE), "V3")["train"]
    assert t3["batch_size"] == 4
    assert t3["budget"] == {"seconds": 60.0, "iters": 500, "tokens": None}
    assert t3["lr"] == 6e-4 and t3["warmup"] == 20
    data = copy.deepcopy(BASE)
    data["steps"]["V3"]["train"]["budget"] = {"seconds": None, "iters": 500}
    assert run(plan_of(data), "V3")["train"]["budget"] == {"seconds": None, "iters": 500,
                                                          "tokens": None}
    assert deep_merge({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"c": 3}, "d": [2]}) == {
        "a": {"b": 1, "c": 3}, "d": [2]}


def test_step_overrides_reach_only_its_descendants() -> None:
    data = copy.deepcopy(BASE)
    data["steps"]["V1"]["optimizer"] = {"name": "adamw", "spam": {"spike_z": 3.0}}
    p = plan_of(data)
    assert run(p, "V0")["optimizer"]["name"] == "adamwspam"
    assert run(p, "V1")["optimizer"]["name"] == "adamw"
    assert run(p, "V3")["optimizer"]["spam"]["spike_z"] == 3.0
    assert run(p, "V3")["optimizer"]["spam"]["reset_interval"] == 1000


def test_seeds_expand_into_runs_and_inherit() -> None:
    data = copy.deepcopy(BASE)
    data["steps"]["V1"]["seeds"] = [7, 8, 9]
    p = plan_of(data)
    assert [(r.step, r.seed) for r in p.runs] == [
        ("V0", 1), ("V0", 2), ("V1", 7), ("V1", 8), ("V1", 9), ("V3", 7), ("V3", 8), ("V3", 9)]
    assert len({r.config_hash for r in p.runs}) == len(p.runs)
    assert all(r.config["seed"] == r.seed and r.config["step"] == r.step for r in p.runs)
    assert p.steps == ["V0", "V1", "V3"]


def test_runplan_metadata() -> None:
    data = copy.deepcopy(BASE)
    data["defaults"]["priority"] = 5
    data["defaults"]["max_attempts"] = 2
    p = plan_of(data, source="ablations/x.yaml")
    r = next(r for r in p.runs if r.step == "V1")
    assert (r.parent, r.priority, r.max_attempts, r.budget_seconds) == ("V0", 5, 2, 60.0)
    assert r.config_hash == ids.config_hash(r.config) and len(r.config_hash) == 64
    assert p.source == "ablations/x.yaml" and p.name == "ra_quick"
    assert p.spec["steps"]["V1"]["expect"] == {"best_val_loss": [3.5, 3.6]}
    assert p.spec_hash == ids.spec_hash(p.spec)
    assert p.overrides == {}


def test_hash_is_stable_across_spellings_and_order() -> None:
    a = plan_of(BASE)
    spelled = copy.deepcopy(BASE)
    spelled["defaults"]["train"] = {"warmup": 20, "lr": 0.0006, "budget": {"seconds": 60.0}}
    spelled["steps"]["V3"]["train"] = {"budget": {"iters": 500}, "batch_size": 4}
    b = plan_of(spelled)
    assert [r.config_hash for r in a.runs] == [r.config_hash for r in b.runs]
    assert a.spec_hash == b.spec_hash
    # resolving twice gives the same hashes (no hidden state)
    assert [r.config_hash for r in plan_of(BASE).runs] == [r.config_hash for r in a.runs]


@pytest.mark.parametrize("edit", [
    lambda d: d["defaults"]["train"].update(lr=3e-4),
    lambda d: d["steps"]["V1"]["attention"]["ra"].update(R=8),
    lambda d: d["defaults"]["model"].update(dropout=0.1),
    lambda d: d["defaults"].update(wandb={"project": "p"}),
    lambda d: d["defaults"]["optimizer"].update(spam={"legacy_double_count": True}),
])
def test_hash_changes_with_any_config_value(edit: Any) -> None:
    data = copy.deepcopy(BASE)
    edit(data)
    before = {(r.step, r.seed): r.config_hash for r in plan_of(BASE).runs}
    after = {(r.step, r.seed): r.config_hash for r in plan_of(data).runs}
    assert before["V3", 1] != after["V3", 1]


def test_hash_of_unchanged_steps_survives_an_edit_elsewhere() -> None:
    data = copy.deepcopy(BASE)
    data["steps"]["V3"]["mlp"] = {"rmlp": {"R_ff": 128}}
    data["description"] = "edited"
    before = {(r.step, r.seed): r.config_hash for r in plan_of(BASE).runs}
    after = {(r.step, r.seed): r.config_hash for r in plan_of(data).runs}
    assert before["V0", 1] == after["V0", 1] and before["V1", 2] == after["V1", 2]
    assert before["V3", 1] != after["V3", 1]


def test_overrides_change_config_hash_and_are_recorded() -> None:
    ov = Overrides(preset="small", dataset="text:/tmp/x.txt", time=30, max_iters=100, seeds=(5,))
    p = plan_of(BASE, overrides=ov)
    assert p.overrides == {"preset": "small", "dataset": "text:/tmp/x.txt", "time": 30,
                           "max_iters": 100, "seeds": [5]}
    assert [(r.step, r.seed) for r in p.runs] == [("V0", 5), ("V1", 5), ("V3", 5)]
    cfg = run(p, "V3", 5)
    assert cfg["model"]["preset"] == "small" and cfg["model"]["n_embd"] == PRESETS["small"]["n_embd"]
    assert cfg["data"]["dataset"] == "text:/tmp/x.txt"
    assert cfg["train"]["budget"] == {"seconds": 30.0, "iters": 100, "tokens": None}
    assert cfg["train"]["max_iters"] == 100
    plain = {r.step: r.config_hash for r in plan_of(BASE, overrides=Overrides(seeds=(5,))).runs}
    assert all(plain[r.step] != r.config_hash for r in p.runs)
    only_time = run(plan_of(BASE, overrides=Overrides(time=10)), "V3")
    assert only_time["train"]["budget"] == {"seconds": 10.0, "iters": None, "tokens": None}


def test_preset_override_beats_explicit_sizes() -> None:
    data = copy.deepcopy(BASE)
    data["defaults"]["model"] = {"n_layer": 24, "n_head": 16, "n_embd": 1024, "block_size": 512}
    cfg = run(plan_of(data, overrides=Overrides(preset="tiny")), "V0")["model"]
    assert (cfg["preset"], cfg["n_layer"], cfg["n_embd"]) == ("tiny", 4, 128)


def test_steps_subset_and_unknown_step() -> None:
    p = plan_of(BASE, steps=["V3", "V1"])
    assert p.steps == ["V1", "V3"]
    assert run(p, "V3")["model"]["attn"] == "ra"  # parent resolved though not selected
    with pytest.raises(UnknownStep, match=r"--steps: no step 'V9' in study 'ra_quick' \(steps: V0, V1, V3\)"):
        plan_of(BASE, steps=["V1", "V9"])


@pytest.mark.parametrize(("edit", "path", "text"), [
    (lambda d: d["defaults"]["model"].update(preset="huge"), "defaults.model.preset",
     "unknown preset 'huge' (known: tiny, small, gpt2-124m)"),
    (lambda d: d["steps"]["V1"].update(model={"preset": "huge"}), "steps.V1.model.preset",
     "unknown preset 'huge'"),
    (lambda d: d["defaults"].update(model={"n_layer": 2}), "defaults.model",
     "no n_head, n_embd, block_size"),
    (lambda d: d["defaults"]["train"].pop("budget"), "defaults.train.budget", "no budget"),
    (lambda d: d["steps"]["V3"]["train"].update(budget={"seconds": None, "iters": None}),
     "steps.V3.train.budget", "no budget"),
    (lambda d: d["defaults"]["data"].update(tokenizer="bpe32k"), "defaults.data.tokenizer",
     "unknown tokenizer 'bpe32k' (known: gpt2, byte)"),
    (lambda d: d["steps"]["V1"].update(model={"n_head": 3}), "steps.V1.model.n_head",
     "n_embd 128 is not divisible by n_head 3"),
])
def test_resolution_errors_name_the_path(edit: Any, path: str, text: str) -> None:
    data = copy.deepcopy(BASE)
    edit(data)
    with pytest.raises(SpecError) as e:
        plan_of(data, source="ablations/x.yaml")
    assert e.value.message.startswith(f"ablations/x.yaml: {path}: ")
    assert text in e.value.message


@pytest.mark.parametrize(("ov", "text"), [
    (Overrides(preset="huge"), "--preset: unknown preset 'huge'"),
    (Overrides(time=0), "--time: must be > 0"),
    (Overrides(max_iters=-1), "--max-iters: must be > 0"),
    (Overrides(seeds=(1, 1)), "--seeds: seeds must be distinct"),
    (Overrides(seeds=()), "--seeds: give at least one seed"),
    (Overrides(dataset="imagenet"), "--dataset: unknown dataset 'imagenet'"),
])
def test_bad_overrides(ov: Overrides, text: str) -> None:
    with pytest.raises(SpecError, match=text.replace("(", r"\(")):
        plan_of(BASE, overrides=ov)


def test_resolve_does_not_mutate_the_spec() -> None:
    spec = Spec.model_validate(copy.deepcopy(BASE))
    before = spec.model_dump()
    p = resolve(spec, presets=PRESETS, vocab=TOKENIZER_VOCAB)
    run(p, "V1")["model"]["attn_knobs"]["R"] = 99
    assert spec.model_dump() == before
    assert run(resolve(spec, presets=PRESETS, vocab=TOKENIZER_VOCAB), "V1")["model"]["attn_knobs"] == {"R": 4}


@pytest.mark.parametrize(("step", "at", "where"), [
    # an unknown knob written by this step: the path goes down to the knob
    ("V3", dict(part="mlp", slot="mlp", knob="R_ff", message="R_ff must be > 0"),
     ("steps.V3.mlp.rmlp.R_ff", "R_ff must be > 0")),
    # a knob the step did not write (a default): the mechanism
    ("V3", dict(part="mlp", slot="mlp", knob="R_FF", message="unknown knob 'R_FF'"),
     ("steps.V3.mlp.rmlp", "unknown knob 'R_FF'")),
    # V3 inherits its attention from V1: the path names the step that wrote it
    ("V3", dict(part="attention", slot="attention", message="unknown attn mechanism 'ra'"),
     ("steps.V1.attention.ra", "unknown attn mechanism 'ra'")),
    ("V1", dict(part="attention", slot="attention", message="R must be <= head_dim, got 4"),
     ("steps.V1.attention.ra", "R must be <= head_dim, got 4")),
    # an inert knob found by the probe keeps its part in the message
    ("V3", dict(part="probe", slot="mlp", knob="R_ff", message="mlp.rmlp.R_ff=64 is inert"),
     ("steps.V3.mlp.rmlp.R_ff", "probe: mlp.rmlp.R_ff=64 is inert")),
    ("V3", dict(part="probe", message="not causal"), ("steps.V3", "probe: not causal")),
    ("V0", dict(part="mlp", slot="mlp", message="odd"), ("steps.V0", "mlp: odd")),
    ("V9", dict(part="model", message="bad"), ("steps.V9", "model: bad")),
])
def test_check_error_location(step: str, at: dict[str, str], where: tuple[str, str]) -> None:
    spec = plan_of(BASE).spec
    line = f"{at['part']}: {at['message']}"
    assert check_error_location(spec, step, line=line, **at) == where


def test_set_overrides_reach_every_step_last_and_enter_the_hash() -> None:
    sets = (parse_set("train.eval_batches=4"), parse_set("train.batch_size=2"),
            parse_set("optimizer.spam.spike_z=3.5"), parse_set("data.tokenizer=byte"))
    p = plan_of(BASE, overrides=Overrides(sets=sets))
    assert p.overrides == {"set": {"train.eval_batches": 4, "train.batch_size": 2,
                                   "optimizer.spam.spike_z": 3.5, "data.tokenizer": "byte"}}
    for r in p.runs:
        cfg = r.config
        # V3 sets batch_size 4 itself: the command line wins over every spec layer
        assert cfg["train"]["eval_batches"] == 4 and cfg["train"]["batch_size"] == 2
        assert cfg["optimizer"]["spam"]["spike_z"] == 3.5
        assert cfg["optimizer"]["spam"]["reset_interval"] == 1000  # siblings kept
        assert cfg["model"]["vocab_size"] == TOKENIZER_VOCAB["byte"]
    plain = {(r.step, r.seed): r.config_hash for r in plan_of(BASE).runs}
    assert all(plain[(r.step, r.seed)] != r.config_hash for r in p.runs)
    same = plan_of(BASE, overrides=Overrides(sets=(parse_set("train.lr=6e-4"),)))
    assert {(r.step, r.seed): r.config_hash for r in same.runs} == plain


@pytest.mark.parametrize(("assignment", "text"), [
    ("train.eval_batchez=4", "--set: train.eval_batchez: unknown key 'eval_batchez'; did you "
                             "mean 'eval_batches'?"),
    ("train.batch_size=many", "--set: train.batch_size: expected an integer, got the string "
                              "'many'"),
    ("train.budget.seconds=-1", "--set: train.budget.seconds: input should be greater than 0"),
    ("steps.V1.lr=1", "--set: expected SECTION.KEY=VALUE with SECTION one of model, data"),
    ("train.lr", "--set: expected SECTION.KEY=VALUE"),
])
def test_bad_set_overrides_name_the_flag(assignment: str, text: str) -> None:
    with pytest.raises(SpecError) as e:
        plan_of(BASE, overrides=Overrides(sets=(parse_set(assignment),)))
    assert str(e.value).startswith(text)
    assert "\n" not in str(e.value)


def test_a_preset_override_applies_its_run_scale_unless_set_on_the_command_line():
    from models.presets import RUN_SCALE
    from orchestrator.core.loader import spec_from_text

    text = """
study: scale
defaults:
  model: {preset: gpt2-124m}
  train: {budget: {seconds: 7200}, batch_size: 8, grad_accum: 8, eval_every: 100, eval_batches: 200}
steps:
  V0: {description: baseline}
"""
    spec = spec_from_text(text, file="scale.yaml")
    full = resolve(spec, presets=PRESETS, vocab=TOKENIZER_VOCAB, run_scale=RUN_SCALE)
    assert full.runs[0].config["train"]["eval_batches"] == 200 and "run_scale" not in full.overrides
    tiny = resolve(spec, presets=PRESETS, vocab=TOKENIZER_VOCAB, run_scale=RUN_SCALE,
                   overrides=Overrides(preset="tiny", time=40,
                                       sets=(("train.eval_batches", 7),)))
    train = tiny.runs[0].config["train"]
    assert train["grad_accum"] == 1 and train["eval_every"] == RUN_SCALE["tiny"]["eval_every"]
    assert train["eval_batches"] == 7  # --set wins over the run scale
    assert tiny.overrides["run_scale"] == {k: v for k, v in RUN_SCALE["tiny"].items()
                                           if k != "eval_batches"}
