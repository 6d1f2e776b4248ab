"""Spec -> StudyPlan: inheritance, deep merge, presets, seeds, command-line overrides.

A run's config is built in layers, each deep-merged over the one before:
the section defaults of `spec.py`, `defaults:`, every ancestor's overrides from the root down,
the step's own, then the command-line overrides. `attention`/`mlp` are not merged: a step
that names one replaces its parent's (with the knobs it writes); a step that names none
inherits it; the root default is causal / gelu. Model sizes left unset come from the preset.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from orchestrator.core import ids
from orchestrator.core.errors import SpecError, UnknownStep
from orchestrator.core.plan import RunPlan, StudyPlan
from orchestrator.core.spec import DataSection, Spec

SIZES = ("n_layer", "n_head", "n_embd", "block_size")
DEFAULT_ATTN = "causal"
DEFAULT_MLP = "gelu"
_SECTIONS = ("model", "data", "train", "optimizer")


@dataclass(frozen=True)
class Overrides:
    """Command-line overrides; each applies to every step and enters its config hash.

    `preset` replaces the spec's model sizes and dropout; `time` / `max_iters` replace the
    budget (the kinds not given are cleared) and `max_iters` also sets `train.max_iters`.
    `sets` are `--set SECTION.KEY=VALUE` assignments (e.g. `train.eval_batches=4`) applied
    last, to every step, and validated like the spec itself.
    """

    preset: str | None = None
    dataset: str | None = None
    time: float | None = None
    max_iters: int | None = None
    seeds: tuple[int, ...] | None = None
    sets: tuple[tuple[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("preset", "dataset", "time", "max_iters"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.seeds is not None:
            out["seeds"] = list(self.seeds)
        if self.sets:
            out["set"] = {path: value for path, value in self.sets}
        return out


def parse_set(assignment: str) -> tuple[str, Any]:
    """'train.eval_batches=4' -> ('train.eval_batches', 4); the value is read as YAML
    (numbers, booleans, null, lists, mappings) by the spec loader's rules (YAML 1.2 floats,
    finite numbers only). SpecError naming --set otherwise."""
    from orchestrator.core.loader import parse_yaml

    path, sep, raw = assignment.partition("=")
    path = path.strip()
    parts = path.split(".")
    if not sep or len(parts) < 2 or not all(parts) or parts[0] not in _SECTIONS:
        raise SpecError(f"expected SECTION.KEY=VALUE with SECTION one of {', '.join(_SECTIONS)} "
                        f"(e.g. --set train.eval_batches=4), got {assignment!r}", path="--set")
    try:
        value = parse_yaml(raw, file=path) if raw.strip() else None
    except SpecError as e:
        raise SpecError(e.message, path="--set") from None
    return path, value


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: `over` merged into `base`; nested dicts merge, everything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve(
    spec: Spec,
    *,
    presets: Mapping[str, Mapping[str, object]],
    vocab: Mapping[str, int],
    overrides: Overrides | None = None,
    steps: Sequence[str] | None = None,
    source: str | None = None,
    run_scale: Mapping[str, Mapping[str, object]] | None = None,
) -> StudyPlan:
    """Resolve every step (or only `steps`) into runs, one per seed, with configs and hashes.

    `run_scale` maps a preset to the train settings that fit its size (`models.presets.
    RUN_SCALE`): with `--preset P` they replace the spec's values (written for the spec's own
    scale: 200 eval batches of a 124M model are minutes of a tiny one), except the keys the
    command line sets with `--set train.KEY=...`. They are recorded in `overrides.run_scale`.

    Raises SpecError (naming `source` and the YAML path) for values only the resolved config
    can judge (unknown preset or tokenizer, missing sizes, no budget), UnknownStep for
    `steps` not in the spec.
    """
    ov = overrides or Overrides()
    _check_overrides(ov, presets)
    wanted = _select(spec, steps)
    scale = _run_scale(ov, run_scale or {})
    runs: list[RunPlan] = []
    for sid in wanted:
        base = _resolve_step(spec, sid, presets, vocab, ov, source)
        base["train"].update(copy.deepcopy(scale))
        step = spec.steps[sid]
        seeds = list(ov.seeds) if ov.seeds is not None else _inherited_seeds(spec, sid)
        for seed in seeds:
            config = {"study": spec.study, "step": sid, "seed": seed, **base}
            budget = config["train"]["budget"]
            runs.append(RunPlan(
                step=sid,
                seed=seed,
                config=config,
                config_hash=ids.config_hash(config),
                parent=step.parent,
                description=step.description,
                priority=spec.defaults.priority,
                max_attempts=spec.defaults.max_attempts,
                budget_seconds=budget["seconds"],
            ))
    spec_json = spec.model_dump(mode="json")
    return StudyPlan(
        name=spec.study,
        description=spec.description,
        spec_hash=ids.spec_hash(spec_json),
        spec=spec_json,
        runs=tuple(runs),
        source=source,
        code_policy=spec.code,
        pinned_sha=spec.pinned_sha,
        overrides={**ov.as_dict(), **({"run_scale": dict(scale)} if scale else {})},
    )


def _run_scale(ov: Overrides, run_scale: Mapping[str, Mapping[str, object]]) -> dict[str, object]:
    """The train settings of `--preset`'s run scale that the command line does not `--set`."""
    if ov.preset is None:
        return {}
    given = {path for path, _ in ov.sets}
    return {key: value for key, value in run_scale.get(ov.preset, {}).items()
            if f"train.{key}" not in given}


def _select(spec: Spec, steps: Sequence[str] | None) -> list[str]:
    if steps is None:
        return list(spec.steps)
    unknown = [s for s in steps if s not in spec.steps]
    if unknown:
        raise UnknownStep(
            f"--steps: no step {unknown[0]!r} in study {spec.study!r} "
            f"(steps: {', '.join(spec.steps)})"
        )
    if not steps:
        raise UnknownStep(f"--steps is empty (steps: {', '.join(spec.steps)})")
    return [s for s in spec.steps if s in steps]


def _check_overrides(ov: Overrides, presets: Mapping[str, Mapping[str, object]]) -> None:
    def bad(flag: str, msg: str) -> SpecError:
        return SpecError(msg, path=flag)

    if ov.preset is not None and ov.preset not in presets:
        raise bad("--preset", f"unknown preset {ov.preset!r} (known: {', '.join(presets)})")
    if ov.time is not None and not math.isfinite(ov.time):
        raise bad("--time", f"must be a finite number of seconds, got {ov.time}")
    if ov.time is not None and not ov.time > 0:
        raise bad("--time", f"must be > 0 seconds, got {ov.time}")
    if ov.max_iters is not None and ov.max_iters <= 0:
        raise bad("--max-iters", f"must be > 0, got {ov.max_iters}")
    if ov.seeds is not None:
        if not ov.seeds:
            raise bad("--seeds", "give at least one seed, e.g. --seeds 1,2")
        if len(set(ov.seeds)) != len(ov.seeds) or any(s < 0 for s in ov.seeds):
            raise bad("--seeds", f"seeds must be distinct and >= 0, got {list(ov.seeds)}")
    for path, _ in ov.sets:
        if path.split(".")[0] not in _SECTIONS:
            raise bad("--set", f"{path}: unknown section (use one of {', '.join(_SECTIONS)})")
    if ov.dataset is not None:
        try:
            DataSection(dataset=ov.dataset)
        except ValueError:
            raise bad("--dataset", f"unknown dataset {ov.dataset!r} (use kjv, text:PATH or hf:NAME)") from None


def _apply_sets(section: str, acc: dict[str, Any], sets: Sequence[tuple[str, Any]],
                model: type[BaseModel]) -> dict[str, Any]:
    """`acc` with the `--set` assignments of `section` applied and validated by the section's
    pydantic model (unknown keys and wrong types are SpecErrors naming --set)."""
    mine = [(path, value) for path, value in sets if path.split(".")[0] == section]
    if not mine:
        return acc
    for path, value in mine:
        *parents, last = path.split(".")[1:]
        node = acc
        for key in parents:
            child = node.setdefault(key, {})
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise SpecError(f"{path}: {key} is not a mapping", path="--set")
            node = child
        node[last] = copy.deepcopy(value)
    try:
        validated = model.model_validate(acc)
    except ValidationError as e:
        from orchestrator.core.loader import describe_validation, format_path

        loc, message = describe_validation(e, model)
        raise SpecError(f"{format_path((section, *loc))}: {message}", path="--set") from None
    out: dict[str, Any] = validated.model_dump(mode="json")
    return out


def _inherited_seeds(spec: Spec, sid: str) -> list[int]:
    for anc in reversed(spec.lineage(sid)):
        if spec.steps[anc].seeds is not None:
            return list(spec.steps[anc].seeds or [])
    return list(spec.defaults.seeds)


def _origin(spec: Spec, sid: str, section: str, key: str) -> str:
    """The YAML path of the layer that last set `section.key` for step `sid`."""
    for anc in reversed(spec.lineage(sid)):
        sec = getattr(spec.steps[anc], section)
        if sec is not None and key in sec.model_fields_set:
            return f"steps.{anc}.{section}.{key}"
    return f"defaults.{section}.{key}"


def _mechanism(spec: Spec, sid: str, slot: str, default: str) -> tuple[str, dict[str, Any]]:
    for anc in reversed(spec.lineage(sid)):
        value = getattr(spec.steps[anc], slot)
        if value:
            ((name, knobs),) = value.items()
            return name, copy.deepcopy(knobs)
    return default, {}


def _resolve_step(spec: Spec, sid: str, presets: Mapping[str, Mapping[str, object]],
                  vocab: Mapping[str, int], ov: Overrides, source: str | None) -> dict[str, Any]:
    d = spec.defaults
    sections: dict[str, dict[str, Any]] = {}
    for name in _SECTIONS:
        acc = type(getattr(d, name))().model_dump(mode="json")
        acc = deep_merge(acc, getattr(d, name).model_dump(mode="json", exclude_unset=True))
        for anc in spec.lineage(sid):
            layer = getattr(spec.steps[anc], name)
            if layer is not None:
                acc = deep_merge(acc, layer.model_dump(mode="json", exclude_unset=True))
        sections[name] = _apply_sets(name, acc, ov.sets, type(getattr(d, name)))

    def fail(path: str, msg: str) -> SpecError:
        return SpecError(msg, file=source, path=path)

    m = sections["model"]
    if ov.preset is not None:
        m["preset"] = ov.preset
        for key in (*SIZES, "dropout"):
            m[key] = None
    preset: Mapping[str, object] = {}
    if m["preset"] is not None:
        if m["preset"] not in presets:
            raise fail(_origin(spec, sid, "model", "preset"),
                       f"unknown preset {m['preset']!r} (known: {', '.join(presets)})")
        preset = presets[m["preset"]]
    for key in SIZES:
        if m[key] is None:
            m[key] = preset.get(key)
    missing = [k for k in SIZES if m[k] is None]
    if missing:
        where = f"steps.{sid}.model" if spec.steps[sid].model is not None else "defaults.model"
        raise fail(where, f"no {', '.join(missing)}: set `preset: <{'|'.join(presets)}>` "
                          f"or give n_layer, n_head, n_embd, block_size")
    if m["n_embd"] % m["n_head"]:
        raise fail(_origin(spec, sid, "model", "n_head"),
                   f"n_embd {m['n_embd']} is not divisible by n_head {m['n_head']}")
    if m["dropout"] is None:
        m["dropout"] = float(str(preset.get("dropout", 0.0)))

    data = sections["data"]
    if ov.dataset is not None:
        data["dataset"] = ov.dataset
    if data["tokenizer"] not in vocab:
        raise fail(_origin(spec, sid, "data", "tokenizer"),
                   f"unknown tokenizer {data['tokenizer']!r} (known: {', '.join(vocab)})")

    train = sections["train"]
    if ov.time is not None or ov.max_iters is not None:
        train["budget"] = {"seconds": None if ov.time is None else float(ov.time),
                           "iters": ov.max_iters, "tokens": None}
        if ov.max_iters is not None:
            train["max_iters"] = ov.max_iters
    budget = {"seconds": None, "iters": None, "tokens": None, **(train["budget"] or {})}
    train["budget"] = budget
    if all(v is None for v in budget.values()):
        raise fail(_origin(spec, sid, "train", "budget"),
                   "no budget: set train.budget to at least one of seconds, iters, tokens "
                   "(e.g. `budget: {seconds: 60}`)")

    attn, attn_knobs = _mechanism(spec, sid, "attention", DEFAULT_ATTN)
    mlp, mlp_knobs = _mechanism(spec, sid, "mlp", DEFAULT_MLP)
    model = {
        "preset": m["preset"],
        "n_layer": m["n_layer"], "n_head": m["n_head"], "n_embd": m["n_embd"],
        "block_size": m["block_size"], "vocab_size": vocab[data["tokenizer"]],
        "dropout": m["dropout"], "bias": m["bias"], "mlp_expansion": m["mlp_expansion"],
        "attn": attn, "attn_knobs": attn_knobs, "mlp": mlp, "mlp_knobs": mlp_knobs,
    }
    if m.get("d_ff") is not None:  # i14: explicit MLP width, present only when given (hash unchanged)
        model["d_ff"] = m["d_ff"]
    return {
        "model": model,
        "data": data,
        "train": train,
        "optimizer": sections["optimizer"],
        "wandb": d.wandb.model_dump(mode="json"),
    }


def check_error_location(spec: Mapping[str, Any], step: str, *, line: str, part: str,
                         message: str, slot: str | None = None,
                         knob: str | None = None) -> tuple[str, str]:
    """(YAML path, message) for a model-check failure of `step`, given as data by
    `workers.check.CheckError` (`line` is the check's whole error line), e.g.
    ('steps.V3.mlp.rmlp.R_FF', "unknown knob 'R_FF' ...").

    The path names the ancestor step that wrote `slot` (attention or mlp), its mechanism, and
    `knob` when that step wrote it; without a slot (model, probe), it is `steps.<step>`. The
    message is `message` when the path names its part, else `line`."""
    steps: Mapping[str, Any] = spec.get("steps", {})
    whole = line
    if step not in steps or slot not in ("attention", "mlp"):
        return f"steps.{step}", whole
    seen: list[str] = []
    sid: str | None = step
    while sid is not None and sid in steps and sid not in seen:
        seen.append(sid)
        written = steps[sid].get(slot)
        if written:
            ((name, knobs),) = written.items()
            path = f"steps.{sid}.{slot}.{name}"
            if knob is not None and knob in (knobs or {}):
                path += f".{knob}"
            return path, message if part == slot else whole
        sid = steps[sid].get("parent")
    return f"steps.{step}", whole
