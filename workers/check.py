"""Dry-run every step's model before it is queued: build, count, probe (design.md §1, issue 5).

For the first run of each step: the model config is validated by constructing it on the meta
device (parameter counts by part, the attention:MLP ratio), then a shrunken copy (n_layer <= 2,
T <= 32, small vocabulary, the mechanism knobs kept) runs a CPU forward/backward that checks
finite loss and gradients, causality, and that every enabled mechanism changes the output.
Steps whose resolved models are identical are flagged, and probed once: results are cached
by the hash of the model config (knob defaults filled in), so a study whose steps share a
model, or a second check of the same spec in one process, costs one probe per distinct model.

A knob that looks inert at the shrunken width is judged again at the next widths up to the
resolved one: a knob written as a fraction of a width (`R_ff_frac`) can round to its default
at E96 and act at E768. The step's `probe` text names every width a knob was judged at.
"""

from __future__ import annotations

import copy
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

SLOTS = (("attn", "attention"), ("mlp", "mlp"))
PROBE_T = 32
PROBE_VOCAB = 64
PROBE_HEAD_DIMS = (8, 16, 32)


@dataclass(frozen=True)
class CheckError:
    """Where a step's model check failed, as data (`recip queue submit` turns it into the
    spec's YAML path without reading the text): `part` is model, attention, mlp or probe;
    `slot` (attention or mlp) and `mechanism` name the slot at fault, `knob` the one knob
    when a single knob is (an unknown or an inert one)."""

    part: str
    message: str
    slot: str | None = None
    mechanism: str | None = None
    knob: str | None = None


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


class _Invalid(Exception):
    """A step's model cannot be built; the message is the StepCheck error line."""

    def __init__(self, line: str, at: CheckError) -> None:
        super().__init__(line)
        self.at = at


def _invalid(part: str, message: str, *, mechanism: str | None = None,
             knob: str | None = None, prefix_mechanism: bool = True) -> _Invalid:
    slot = part if part in ("attention", "mlp") else None
    where = f"{part}.{mechanism}" if mechanism and prefix_mechanism else part
    return _Invalid(f"{where}: {message}",
                    CheckError(part=part, message=message, slot=slot, mechanism=mechanism, knob=knob))


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
    except _Invalid as e:
        return StepCheck(step=step, ok=False, error=str(e), error_at=e.at, mechanisms=label)
    ratio = params["mlp"] / params["attention"] if params["attention"] else 0.0
    try:
        probe = _probe(cfg)
    except _Invalid as e:
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
    small = next(iter(_probe_configs(cfg)))
    try:
        model = _build(small).double()
    except (ValueError, TypeError, AssertionError):
        return {}
    gen = torch.Generator().manual_seed(2)
    idx = torch.randint(0, small.vocab_size, (2, small.block_size), generator=gen)
    ref = _logits(model, idx)
    inert: dict[str, int] = {}
    params = dict(model.named_parameters())
    for name in frozen:
        p = params.get(name)
        if p is None:
            continue
        saved = p.detach().clone()
        with torch.no_grad():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
        moved = (_logits(model, idx) - ref).abs().max().item() > 1e-12
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
        raise _invalid("model", _one_line(e)) from None


def _validate(cfg: GPTConfig) -> GPT:
    """Knobs first, then the whole model on meta, which is returned; when it does not build,
    each slot's module on its own, so the error names the slot that failed."""
    for slot, word in SLOTS:
        name, knobs = (cfg.attn, cfg.attn_knobs) if slot == "attn" else (cfg.mlp, cfg.mlp_knobs)
        try:
            registry.make_knobs(name, slot, knobs)
        except registry.UnknownMechanismError as e:
            raise _invalid(word, _one_line(e), mechanism=name, prefix_mechanism=False) from None
        except (ValueError, TypeError) as e:
            known = {f.name for f in dataclasses.fields(registry.get(name, slot).knobs)}
            unknown = sorted(set(knobs) - known)
            raise _invalid(word, _one_line(e), mechanism=name,
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
            raise _invalid(word, _one_line(e), mechanism=name) from None
    raise _invalid("model", _one_line(whole)) from None


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


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _model_key(model: Mapping[str, Any]) -> str | None:
    """Canonical JSON of the model with every knob default filled in; None if invalid."""
    try:
        cfg = _config(model)
        d = cfg.to_dict()
        d["attn_knobs"] = dataclasses.asdict(registry.make_knobs(cfg.attn, "attn", cfg.attn_knobs))
        d["mlp_knobs"] = dataclasses.asdict(registry.make_knobs(cfg.mlp, "mlp", cfg.mlp_knobs))
    except (_Invalid, ValueError, TypeError):
        return None
    return json.dumps(d, sort_keys=True, default=str)


# ----------------------------------------------------------------------------------------
# the CPU probe


@dataclass
class _Probe:
    shape: str
    finite: bool = True
    causal: bool = True
    leak: str = ""
    active: bool | None = None
    inert: list[CheckError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    judged: list[str] = field(default_factory=list)
    """Knobs inert at `shape` that act at a wider probe, e.g. `mlp.rmlp.R_ff_frac at E768`."""

    def describe(self) -> str:
        """`L2 H12 E96 T32`, plus `; mlp.rmlp.R_ff_frac at E768` for knobs judged wider."""
        return "; ".join([self.shape, *self.judged])


def _probe_configs(cfg: GPTConfig) -> Iterator[GPTConfig]:
    small = dict(cfg.to_dict(), n_layer=min(cfg.n_layer, 2), block_size=min(cfg.block_size, PROBE_T),
                 vocab_size=min(cfg.vocab_size, PROBE_VOCAB), dropout=0.0)
    widths = [cfg.n_head * hd for hd in PROBE_HEAD_DIMS if hd < cfg.head_dim] + [cfg.n_embd]
    for n_embd in widths:
        yield GPTConfig(**dict(small, n_embd=n_embd))


def _build(cfg: GPTConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(cfg).eval()


def _probe(cfg: GPTConfig) -> _Probe:
    with torch.random.fork_rng(devices=[]):
        last: BaseException | None = None
        sizes = list(_probe_configs(cfg))
        for i, small in enumerate(sizes):
            try:
                model = _build(small)
                larger = sizes[i + 1:]
                break
            except (ValueError, TypeError, AssertionError) as e:
                last = e
        else:
            raise _invalid("probe", f"no shrunken size builds ({_one_line(last or ValueError())})")
        try:
            return _run_probe(model, small, larger=larger)
        except (RuntimeError, ValueError, TypeError, AssertionError, IndexError) as e:
            raise _invalid("probe", f"forward/backward failed: {type(e).__name__}: {_one_line(e)}") from None


def _logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(idx)[0]
    return out


def _run_probe(model: GPT, cfg: GPTConfig, larger: Sequence[GPTConfig] = ()) -> _Probe:
    T = cfg.block_size
    probe = _Probe(shape=f"L{cfg.n_layer} H{cfg.n_head} E{cfg.n_embd} T{T}")
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(0, cfg.vocab_size, (2, T), generator=gen)

    # finite loss and gradients; parameters that get no gradient are reported
    model.train()
    x, y = idx[:, :-1].contiguous(), idx[:, 1:].contiguous()
    _, loss = model(x, y)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    probe.finite = bool(torch.isfinite(loss)) and all(g is None or bool(torch.isfinite(g).all()) for g in grads.values())
    dead = [n for n, g in grads.items() if g is None or not bool(g.abs().sum() > 0)]
    if dead:
        more = f" (+{len(dead) - 3} more)" if len(dead) > 3 else ""
        probe.warnings.append(f"{len(dead)} parameter(s) get no gradient: {', '.join(dead[:3])}{more}")
    model.zero_grad(set_to_none=True)
    model.eval()

    # causality: change the last token, then the second half; earlier logits must not move
    ref = _logits(model, idx)
    for t in (T - 1, T // 2):
        pert = idx.clone()
        pert[:, t:] = (pert[:, t:] + 1 + torch.arange(T - t)) % cfg.vocab_size
        diff = (_logits(model, pert)[:, :t] - ref[:, :t]).abs().max().item() if t > 0 else 0.0
        if diff > 0.0 and _leaks_in_float64(model, idx, pert, t):
            probe.causal = False
            probe.leak = f"max |diff| {diff:.2g} before position {t}"
            break

    # mechanisms: differ from the GPT-2 baseline, and every enabled knob changes the output
    if cfg.attn == "causal" and cfg.mlp == "gelu":
        return probe
    base = _build(dataclasses.replace(cfg, attn="causal", attn_knobs={}, mlp="gelu", mlp_knobs={}))
    if _same_output(base, model, idx):
        probe.inert.append(CheckError("probe", "the output equals the GPT-2 baseline built "
                                               "with the same seed"))
    for slot, word in SLOTS:
        probe_inert_knobs(model, cfg, slot, word, idx, probe, larger=larger)
    probe.active = not probe.inert
    return probe


def _leaks_in_float64(model: GPT, idx: torch.Tensor, pert: torch.Tensor, t: int) -> bool:
    """A float32 difference is a leak only if it survives in float64 (else it is rounding)."""
    m64 = model.double()
    try:
        diff = (_logits(m64, pert)[:, :t] - _logits(m64, idx)[:, :t]).abs().max().item()
    finally:
        model.float()
    return diff > 1e-10


def _same_output(a: GPT, b: GPT, idx: torch.Tensor) -> bool:
    """Equal logits; a float32 difference counts only if it survives in float64 (two kernels of
    the same maths, e.g. SDPA and an explicit softmax, differ by rounding)."""
    if torch.equal(_logits(a, idx), _logits(b, idx)):
        return True
    a64, b64 = a.double(), b.double()
    try:
        la, lb = _logits(a64, idx), _logits(b64, idx)
        return bool((la - lb).abs().max().item() <= 1e-9 * max(1.0, lb.abs().max().item()))
    finally:
        a.float()
        b.float()


def _same_after_a_step(a: GPT, b: GPT, idx: torch.Tensor) -> bool:
    """Equal outputs after one SGD step of copies of both on the same batch: a knob may be the
    identity at init (an identity mixer, a frozen or learned scalar) and still change training."""
    a, b = copy.deepcopy(a), copy.deepcopy(b)
    x, y = idx[:, :-1].contiguous(), idx[:, 1:].contiguous()
    for m in (a, b):
        m.train()
        _, loss = m(x, y)
        loss.backward()
        with torch.no_grad():  # plain SGD, lr 1 (torch.optim would import torch._dynamo, ~1.5 s)
            for p in m.parameters():
                if p.requires_grad and p.grad is not None:
                    p.sub_(p.grad)
        m.eval()
    return _same_output(a, b, idx)


def _enabling(default: Any, value: Any) -> bool:
    """A knob switches something on when its default is off (False/None/0) and its value is not."""
    return (default is None or default is False or default == 0) and value not in (None, False, 0, 0.0)


def _knob_acts(model: GPT, cfg: GPTConfig, slot: str, knob: str, default: Any,
               idx: torch.Tensor) -> bool | None:
    """Does `knob` change the output or a training step of `model` (built from `cfg`)? The
    model is rebuilt with the knob at its default and the same weights; None if that rebuild
    does not build."""
    given = cfg.attn_knobs if slot == "attn" else cfg.mlp_knobs
    ablated_knobs = {**given, knob: default}
    ablated_cfg = (dataclasses.replace(cfg, attn_knobs=ablated_knobs) if slot == "attn"
                   else dataclasses.replace(cfg, mlp_knobs=ablated_knobs))
    try:
        other = _build(ablated_cfg, seed=1)
    except (ValueError, TypeError, AssertionError):
        return None
    state, own = model.state_dict(), other.state_dict()
    other.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False)
    return not (_same_output(other, model, idx) and _same_after_a_step(other, model, idx))


def _acts_when_wider(larger: Sequence[GPTConfig], slot: str, knob: str, default: Any) -> GPTConfig | None:
    """The first of the `larger` probe sizes at which `knob` acts, or None."""
    for wide in larger:
        try:
            model = _build(wide)
        except (ValueError, TypeError, AssertionError):
            continue
        gen = torch.Generator().manual_seed(1)
        idx = torch.randint(0, wide.vocab_size, (2, wide.block_size), generator=gen)
        if _knob_acts(model, wide, slot, knob, default, idx):
            return wide
    return None


def probe_inert_knobs(model: GPT, cfg: GPTConfig, slot: str, word: str, idx: torch.Tensor,
                      probe: _Probe, larger: Sequence[GPTConfig] = ()) -> None:
    """Rebuild without each enabling knob (same weights); an unchanged output means the knob is
    inert at this size. An inert knob is judged again at each of the `larger` sizes (up to the
    resolved width): it is inert only if it acts at none of them."""
    name, given = (cfg.attn, cfg.attn_knobs) if slot == "attn" else (cfg.mlp, cfg.mlp_knobs)
    knobs = registry.make_knobs(name, slot, given)
    defaults = {f.name: f.default for f in dataclasses.fields(knobs)}
    forced = bool(getattr(knobs, "force_gates_open", False))
    post_train = frozenset(getattr(type(knobs), "POST_TRAIN", frozenset()))
    for knob, value in given.items():
        if knob not in defaults or not _enabling(defaults[knob], value) or knob == "force_gates_open":
            continue
        if knob in post_train:
            # acts only after training (KVSplice calibrates on the trained model, §19 #11):
            # it must reach the trainer's post_train hook instead of changing the forward
            if not any(callable(getattr(m, "post_train", None)) for m in model.modules()):
                probe.inert.append(CheckError(
                    "probe", f"{word}.{name}.{knob}={value!r} acts after training, but no "
                             f"module of the model has a post_train hook",
                    slot=word, mechanism=name, knob=knob))
            else:
                probe.warnings.append(f"{word}.{name}.{knob}={value!r} acts after training "
                                      f"(post_train); not probed in the forward")
            continue
        acts = _knob_acts(model, cfg, slot, knob, defaults[knob], idx)
        if acts is None or acts:
            continue
        if forced:  # the identity by design: no wider size will change that
            probe.warnings.append(f"{word}.{name}.{knob}={value!r} changes neither the output nor "
                                  f"a training step (same weights with {knob}={defaults[knob]!r}): "
                                  "force_gates_open makes it the identity (§5)")
            continue
        wide = _acts_when_wider(larger, slot, knob, defaults[knob])
        if wide is not None:
            probe.judged.append(f"{word}.{name}.{knob} at E{wide.n_embd}")
            continue
        widths = ", ".join(f"E{c.n_embd}" for c in (cfg, *larger))
        what = (f"{word}.{name}.{knob}={value!r} changes neither the output nor a training "
                f"step (same weights with {knob}={defaults[knob]!r}; probed at {widths})")
        probe.inert.append(CheckError("probe", what, slot=word, mechanism=name, knob=knob))
