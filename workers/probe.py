"""The CPU probe of one model, as `recip check` and `recip queue submit` run it: the model is
built small (2 layers, T 32, a 64-token vocabulary, widths up to the real one) with real
weights, then checked for finite loss and gradients, causality (earlier logits must not move
when later tokens change; a float32 difference counts only if it survives in float64), a
difference from the GPT-2 baseline, and for every enabled knob a change of the output or of a
training step (judged again at wider sizes when it does nothing at the smallest).

`CheckError` / `Invalid` are the structured errors both this module and `workers.check` raise.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from models import registry
from models.config import GPTConfig
from models.gpt2 import GPT

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


class Invalid(Exception):
    """A step's model cannot be built; the message is the StepCheck error line."""

    def __init__(self, line: str, at: CheckError) -> None:
        super().__init__(line)
        self.at = at


def invalid(part: str, message: str, *, mechanism: str | None = None,
             knob: str | None = None, prefix_mechanism: bool = True) -> Invalid:
    slot = part if part in ("attention", "mlp") else None
    where = f"{part}.{mechanism}" if mechanism and prefix_mechanism else part
    return Invalid(f"{where}: {message}",
                    CheckError(part=part, message=message, slot=slot, mechanism=mechanism, knob=knob))


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# ----------------------------------------------------------------------------------------
# the CPU probe


@dataclass
class Probe:
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


def probe_configs(cfg: GPTConfig) -> Iterator[GPTConfig]:
    small = dict(cfg.to_dict(), n_layer=min(cfg.n_layer, 2), block_size=min(cfg.block_size, PROBE_T),
                 vocab_size=min(cfg.vocab_size, PROBE_VOCAB), dropout=0.0)
    widths = [cfg.n_head * hd for hd in PROBE_HEAD_DIMS if hd < cfg.head_dim] + [cfg.n_embd]
    for n_embd in widths:
        yield GPTConfig(**dict(small, n_embd=n_embd))


def build(cfg: GPTConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(cfg).eval()


def probe_model(cfg: GPTConfig) -> Probe:
    with torch.random.fork_rng(devices=[]):
        last: BaseException | None = None
        sizes = list(probe_configs(cfg))
        for i, small in enumerate(sizes):
            try:
                model = build(small)
                larger = sizes[i + 1:]
                break
            except (ValueError, TypeError, AssertionError) as e:
                last = e
        else:
            raise invalid("probe", f"no shrunken size builds ({one_line(last or ValueError())})")
        try:
            return _run_probe(model, small, larger=larger)
        except (RuntimeError, ValueError, TypeError, AssertionError, IndexError) as e:
            raise invalid("probe", f"forward/backward failed: {type(e).__name__}: {one_line(e)}") from None


def logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(idx)[0]
    return out


def _run_probe(model: GPT, cfg: GPTConfig, larger: Sequence[GPTConfig] = ()) -> Probe:
    T = cfg.block_size
    probe = Probe(shape=f"L{cfg.n_layer} H{cfg.n_head} E{cfg.n_embd} T{T}")
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
    ref = logits(model, idx)
    for t in (T - 1, T // 2):
        pert = idx.clone()
        pert[:, t:] = (pert[:, t:] + 1 + torch.arange(T - t)) % cfg.vocab_size
        diff = (logits(model, pert)[:, :t] - ref[:, :t]).abs().max().item() if t > 0 else 0.0
        if diff > 0.0 and _leaks_in_float64(model, idx, pert, t):
            probe.causal = False
            probe.leak = f"max |diff| {diff:.2g} before position {t}"
            break

    # mechanisms: differ from the GPT-2 baseline, and every enabled knob changes the output
    if cfg.attn == "causal" and cfg.mlp == "gelu":
        return probe
    base = build(dataclasses.replace(cfg, attn="causal", attn_knobs={}, mlp="gelu", mlp_knobs={}))
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
        diff = (logits(m64, pert)[:, :t] - logits(m64, idx)[:, :t]).abs().max().item()
    finally:
        model.float()
    return diff > 1e-10


def _same_output(a: GPT, b: GPT, idx: torch.Tensor) -> bool:
    """Equal logits; a float32 difference counts only if it survives in float64 (two kernels of
    the same maths, e.g. SDPA and an explicit softmax, differ by rounding)."""
    if torch.equal(logits(a, idx), logits(b, idx)):
        return True
    a64, b64 = a.double(), b.double()
    try:
        la, lb = logits(a64, idx), logits(b64, idx)
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
        other = build(ablated_cfg, seed=1)
    except (ValueError, TypeError, AssertionError):
        return None
    state, own = model.state_dict(), other.state_dict()
    other.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False)
    return not (_same_output(other, model, idx) and _same_after_a_step(other, model, idx))


def _acts_when_wider(larger: Sequence[GPTConfig], slot: str, knob: str, default: Any) -> GPTConfig | None:
    """The first of the `larger` probe sizes at which `knob` acts, or None."""
    for wide in larger:
        try:
            model = build(wide)
        except (ValueError, TypeError, AssertionError):
            continue
        gen = torch.Generator().manual_seed(1)
        idx = torch.randint(0, wide.vocab_size, (2, wide.block_size), generator=gen)
        if _knob_acts(model, wide, slot, knob, default, idx):
            return wide
    return None


def probe_inert_knobs(model: GPT, cfg: GPTConfig, slot: str, word: str, idx: torch.Tensor,
                      probe: Probe, larger: Sequence[GPTConfig] = ()) -> None:
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
