"""Dry-run every step's model before it is queued: build, count, probe (design.md §1, issue 5).

For the first run of each step: the model config is validated by constructing it on the meta
device (parameter counts by part, the attention:MLP ratio), then a shrunken copy (n_layer <= 2,
T <= 32, small vocabulary, the mechanism knobs kept) runs a CPU forward/backward that checks
finite loss and gradients, causality, and that every enabled mechanism changes the output.
Steps whose resolved models are identical are flagged, and probed once: results are cached
by the hash of the model config (knob defaults filled in), so a study whose steps share a
model, or a second check of the same spec in one process, costs one probe per distinct model.

The probe itself is `workers/probe.py`. A knob that looks inert at the shrunken width is
judged again at the next widths up to the resolved one: a knob written as a fraction of a
width (`R_ff_frac`) can round to its default at E96 and act at E768. The step's `probe` text names every width a knob was judged at.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.init
from torch.overrides import TorchFunctionMode

from models import registry
from models.config import GPTConfig
from models.gpt2 import GPT
from models.widths import misaligned
from models.widths import widths as built_widths
from orchestrator.core.plan import RunPlan, StudyPlan
from workers.probe import (
    SLOTS,
    CheckError,
    Invalid,
    build,
    invalid,
    logits,
    one_line,
    probe_configs,
    probe_model,
)


@dataclass(frozen=True)
class StepCheck:
    """What `check_plan` found for one step; `ok` is False when `error` is set or the probe failed."""

    step: str
    ok: bool
    error: str | None = None
    """One line: the part, then the message (`mlp.rmlp: unknown knob ...`)."""
    error_at: CheckError | None = None
    params: dict[str, int] = field(default_factory=dict)
    attn_mlp_ratio: float = 0.0
    """MLP parameters per attention parameter (the spec's "1:2.5" is 2.5)."""
    causal: bool | None = None
    mechanisms_active: bool | None = None
    """None for the GPT-2 baseline; False when an enabled mechanism leaves the output unchanged."""
    identical_to: str | None = None
    """An earlier step whose resolved model is the same."""
    intended_control: bool = False
    """`identical_to` is declared as this step's intended control (an `analysis.pairs`
    entry with `control: true`): the duplicate is on purpose, so no warning."""
    warnings: tuple[str, ...] = ()
    mechanisms: str = ""
    """`attn(knobs) + mlp(knobs)` as written in the resolved config."""
    probe: str = ""
    """The shrunken shape the CPU probe ran at, e.g. `L2 H4 E64 T32`, then each knob that was
    judged at a wider probe because it was inert at that shape: `; mlp.rmlp.R_ff_frac at E768`."""
    widths: dict[str, int] = field(default_factory=dict)
    """i14: the matmul widths built at the step's size (D_ff, R_ff, latent_dim, head_dim, ...)."""
    frozen_inert: dict[str, int] = field(default_factory=dict)
    """i14: frozen parameters (name with layers as `*` -> count at full size) that never act."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Progress = Callable[[int, int, str], None]
"""`progress(done, total, step)`: called after each distinct model is checked."""

_CACHE: dict[str, StepCheck] = {}
_CACHE_MAX = 256


def check_plan(plan: StudyPlan, steps: Sequence[str] | None = None, *,
               progress: Progress | None = None, jobs: int | None = None) -> list[StepCheck]:
    """Check the first run of each step (or of `steps`), in plan order.

    Each distinct model (by `model_hash`) is checked once, the distinct models in parallel on
    `jobs` processes (default: the usable CPUs); later steps with the same model get the same
    result and `identical_to` naming the first."""
    firsts: dict[str, RunPlan] = {}
    for run in plan.runs:
        if steps is None or run.step in steps:
            firsts.setdefault(run.step, run)
    keys = {step: model_hash(run.config["model"]) for step, run in firsts.items()}
    first_step: dict[str, str] = {}
    for step, key in keys.items():
        if key is not None:
            first_step.setdefault(key, step)
    by_key = {key: _CACHE[key] for key in first_step if key in _CACHE}
    todo = {key: firsts[step].config["model"] for key, step in first_step.items() if key not in by_key}
    done = len(by_key)
    for key, check in _check_models(todo, jobs):
        by_key[key] = _remember(key, check)
        done += 1
        if progress is not None:
            progress(done, len(first_step), first_step[key])
    results: list[StepCheck] = []
    for step, key in keys.items():
        if key is None:  # an invalid model: checked on its own, for its own error line
            results.append(check_model(firsts[step].config["model"], step=step))
            continue
        identical = first_step[key] if first_step[key] != step else None
        results.append(dataclasses.replace(
            by_key[key], step=step, identical_to=identical,
            intended_control=identical is not None
            and frozenset((step, identical)) in plan.controls))
    return results


def model_hash(model: Mapping[str, Any]) -> str | None:
    """sha256 of the model config with every knob default filled in; None if it is invalid."""
    key = _model_key(model)
    return None if key is None else hashlib.sha256(key.encode()).hexdigest()


def _remember(key: str, check: StepCheck) -> StepCheck:
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = check
    return check


def _check_models(models: Mapping[str, Mapping[str, Any]],
                  jobs: int | None) -> Iterator[tuple[str, StepCheck]]:
    """(key, check) per model, as each finishes. Each probe runs single-threaded (tiny
    matrices; two intra-op threads per probe on a loaded box were 10x slower), so the probes
    run side by side in forked processes, one per usable CPU."""
    n = min(len(models), jobs if jobs is not None else _usable_cpus())
    if n <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for key, model in models.items():
            yield key, _check_one_thread(model)
        return
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
        futures = {pool.submit(_check_one_thread, model): key for key, model in models.items()}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _check_one_thread(model: Mapping[str, Any]) -> StepCheck:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return check_model(model)
    finally:
        torch.set_num_threads(threads)


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_model(model: Mapping[str, Any], *, step: str = "") -> StepCheck:
    """Build one resolved model config on meta, then probe a shrunken copy on the CPU.

    Errors are one line naming the part: `model: ...`, `attention: ...` (unknown name),
    `mlp.rmlp: unknown knob ...`, `probe: ...`."""
    label = _label(model)
    try:
        cfg = _config(model)
        meta_model = _validate(cfg)
        params = {k: v for k, v in meta_model.param_counts().items() if k != "attn_mlp_ratio_x1000"}
    except Invalid as e:
        return StepCheck(step=step, ok=False, error=str(e), error_at=e.at, mechanisms=label)
    ratio = params["mlp"] / params["attention"] if params["attention"] else 0.0
    try:
        probe = probe_model(cfg)
    except Invalid as e:
        return StepCheck(step=step, ok=False, error=str(e), error_at=e.at, params=params,
                         attn_mlp_ratio=ratio, mechanisms=label)
    widths, inert, notes = _width_and_frozen_notes(cfg, meta_model)  # i14
    probe.warnings.extend(notes)
    ok = probe.finite and probe.causal and probe.active is not False
    at = None
    if not probe.finite:
        at = CheckError("probe", "loss or gradients are not finite at init")
    elif not probe.causal:
        at = CheckError("probe", "not causal, earlier logits change when later tokens change "
                                 f"({probe.leak})")
    elif probe.active is False:
        at = probe.inert[0]
    error = f"probe: {at.message}" if at else None
    return StepCheck(step=step, ok=ok, error=error, error_at=at, params=params,
                     attn_mlp_ratio=ratio,
                     causal=probe.causal, mechanisms_active=probe.active, warnings=tuple(probe.warnings),
                     mechanisms=label, probe=probe.describe(), widths=widths,
                     frozen_inert=inert)


# ----------------------------------------------------------------------------------------
# widths and frozen parameters (i14; mechanisms.md §5, §18)

FULL_SCALE_EMBD = 768
"""n_embd from which a width that is not a multiple of 64 is worth a warning."""


def _width_and_frozen_notes(cfg: GPTConfig, meta_model: GPT) -> tuple[dict[str, int], dict[str, int], list[str]]:
    """(widths, frozen parameters that never act, warnings): widths not multiples of 64 at
    full scale, KV steps that are only a sliding window, frozen parameters that do nothing."""
    notes: list[str] = []
    w = built_widths(cfg)
    odd = misaligned(cfg)
    if odd and cfg.n_embd >= FULL_SCALE_EMBD:
        notes.append("width(s) not a multiple of 64: " + ", ".join(f"{k} {v}" for k, v in odd.items()))
    for slot, _word in SLOTS:
        name, given = (cfg.attn, cfg.attn_knobs) if slot == "attn" else (cfg.mlp, cfg.mlp_knobs)
        f = getattr(registry.make_knobs(name, slot, given), "warnings", None)
        notes.extend(f(cfg) if f is not None else [])
    inert = _frozen_inert(cfg, meta_model)
    if inert:
        total = sum(inert.values())
        shown = ", ".join(list(inert)[:4]) + (f" (+{len(inert) - 4} more)" if len(inert) > 4 else "")
        notes.append(f"{_count(total)} frozen parameter(s) never act (perturbing them changes "
                     f"nothing): {shown}")
    return w, inert, notes


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 10_000 else str(n)


def _frozen_inert(cfg: GPTConfig, meta_model: GPT) -> dict[str, int]:
    """Frozen (requires_grad=False) parameters whose perturbation leaves a small CPU build's
    output unchanged in float64; names with the layer index as `*`, counts at full size."""
    frozen = {n: p.numel() for n, p in meta_model.named_parameters() if not p.requires_grad}
    if not frozen:
        return {}
    small = next(iter(probe_configs(cfg)))
    try:
        model = build(small).double()
    except (ValueError, TypeError, AssertionError):
        return {}
    gen = torch.Generator().manual_seed(2)
    idx = torch.randint(0, small.vocab_size, (2, small.block_size), generator=gen)
    ref = logits(model, idx)
    inert: dict[str, int] = {}
    params = dict(model.named_parameters())
    for name in frozen:
        p = params.get(name)
        if p is None:
            continue
        saved = p.detach().clone()
        with torch.no_grad():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
        moved = (logits(model, idx) - ref).abs().max().item() > 1e-12
        with torch.no_grad():
            p.copy_(saved)
        if not moved:
            key = _layer_star(name)
            inert[key] = inert.get(key, 0) + frozen[name]
    # names seen only in the small build's layers still count every full-size layer
    for name, n in frozen.items():
        key = _layer_star(name)
        if key in inert and name not in params:
            inert[key] += n
    return inert


def _layer_star(name: str) -> str:
    parts = name.split(".")
    return ".".join("*" if i > 0 and parts[i - 1] == "h" and part.isdigit() else part
                    for i, part in enumerate(parts))


# ----------------------------------------------------------------------------------------
# building


def _config(model: Mapping[str, Any]) -> GPTConfig:
    d = {k: v for k, v in model.items() if k != "preset"}
    try:
        return GPTConfig.from_dict(d)
    except (ValueError, TypeError) as e:
        raise invalid("model", one_line(e)) from None


def _validate(cfg: GPTConfig) -> GPT:
    """Knobs first, then the whole model on meta, which is returned; when it does not build,
    each slot's module on its own, so the error names the slot that failed."""
    for slot, word in SLOTS:
        name, knobs = (cfg.attn, cfg.attn_knobs) if slot == "attn" else (cfg.mlp, cfg.mlp_knobs)
        try:
            registry.make_knobs(name, slot, knobs)
        except registry.UnknownMechanismError as e:
            raise invalid(word, one_line(e), mechanism=name, prefix_mechanism=False) from None
        except (ValueError, TypeError) as e:
            known = {f.name for f in dataclasses.fields(registry.get(name, slot).knobs)}
            unknown = sorted(set(knobs) - known)
            raise invalid(word, one_line(e), mechanism=name,
                           knob=unknown[0] if unknown else None) from None
    try:
        with torch.device("meta"), _SkipInitOnMeta():
            return GPT(cfg)
    except (ValueError, TypeError, AssertionError) as e:
        whole = e
    for slot, word in SLOTS:  # which slot fails on its own? (else the error is the model's)
        name = cfg.attn if slot == "attn" else cfg.mlp
        try:
            with torch.device("meta"), _SkipInitOnMeta():
                for layer in range(min(cfg.n_layer, 2)):
                    registry.build(slot, cfg, layer)
        except (ValueError, TypeError, AssertionError) as e:
            raise invalid(word, one_line(e), mechanism=name) from None
    raise invalid("model", one_line(whole)) from None


_INIT_FUNCS = frozenset(
    {getattr(torch.nn.init, n) for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")}
    | {torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.zero_, torch.Tensor.fill_,
       torch.Tensor.copy_})


class _SkipInitOnMeta(TorchFunctionMode):
    """Used inside `torch.device("meta")`: initialisers are no-ops on meta tensors (they have
    no values) and `torch.eye` is a plain meta tensor of its shape. Without this, meta
    `normal_` runs torch's Python reference kernels, which import torch._dynamo (~1.5 s) and
    cost ~0.3 s per 124M build."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.eye:  # also a Python reference kernel on meta; only its shape matters
            n = args[0] if args else kwargs["n"]
            m = args[1] if len(args) > 1 and isinstance(args[1], int) else kwargs.get("m", n)
            return torch.empty(n, m, dtype=kwargs.get("dtype"), device="meta")
        target = args[0] if args else kwargs.get("tensor")
        if func in _INIT_FUNCS and isinstance(target, torch.Tensor) and target.is_meta:
            return target
        return func(*args, **kwargs)


def _label(model: Mapping[str, Any]) -> str:
    """`mla(latent_dim=128, ra_alpha=0.3) + reciprocal_mlp(gate, cross)`: knobs off their default."""

    def one(slot: str, name: Any, knobs: Any) -> str:
        given = dict(knobs or {})
        try:
            defaults = {f.name: f.default for f in dataclasses.fields(registry.make_knobs(name, slot, given))}
        except (ValueError, TypeError):
            defaults = {}
        parts = [k if v is True else f"{k}={v}" for k, v in given.items()
                 if k not in defaults or defaults[k] != v]
        return f"{name}({', '.join(parts)})" if parts else str(name)

    return f"{one('attn', model.get('attn'), model.get('attn_knobs'))} + {one('mlp', model.get('mlp'), model.get('mlp_knobs'))}"


def _model_key(model: Mapping[str, Any]) -> str | None:
    """Canonical JSON of the model with every knob default filled in; None if invalid."""
    try:
        cfg = _config(model)
        d = cfg.to_dict()
        d["attn_knobs"] = dataclasses.asdict(registry.make_knobs(cfg.attn, "attn", cfg.attn_knobs))
        d["mlp_knobs"] = dataclasses.asdict(registry.make_knobs(cfg.mlp, "mlp", cfg.mlp_knobs))
    except (Invalid, ValueError, TypeError):
        return None
    return json.dumps(d, sort_keys=True, default=str)


