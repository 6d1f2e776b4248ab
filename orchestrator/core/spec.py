"""Pydantic models of a study spec (`ablations/*.yaml`): validated, frozen, no extra keys.

Every section model doubles as the table of defaults: a field's default is the value the
resolved run config gets when no layer sets it (docs/architecture.md), so `resolve` merges
`model_dump(exclude_unset=True)` of each layer over `Section().model_dump()`. Mechanism names
and knobs are not checked here: `workers.check` validates them by building the model.

Structural problems that no single field can see (unknown or cyclic parents, analysis rules
naming unknown steps) raise `SpecProblem`, a ValueError that carries its YAML path, so the
loader can report `file: steps.V3.parent: unknown parent 'V9' (steps: V0, V1, V2)`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    StringConstraints,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_NAME = re.compile(NAME_PATTERN)
NAME_FIX = "use letters, digits, '_', '.', '-', starting with a letter or digit"

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=100)]

# Strict numbers: a boolean (YAML 1.1 reads yes/no/on/off as one) or a quoted string is never
# a number; an integer is a valid float; floats are finite. `3e-4` unquoted is a float
# (the loader's YAML 1.2 rule).
Int = Annotated[int, Field(strict=True)]
PositiveInt = Annotated[int, Field(strict=True, gt=0)]
NonNegativeInt = Annotated[int, Field(strict=True, ge=0)]
Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(strict=True, ge=0.0, lt=1.0, allow_inf_nan=False)]
Bool = Annotated[bool, Field(strict=True)]
Seed = Annotated[int, Field(strict=True, ge=0, lt=2**32)]


class SpecProblem(ValueError):
    """A spec error found by a validator; `path` is relative to the validated object."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Strict):
    """Transformer shape; sizes left unset come from `preset`."""

    preset: str | None = None
    n_layer: PositiveInt | None = None
    n_head: PositiveInt | None = None
    n_embd: PositiveInt | None = None
    block_size: PositiveInt | None = None
    dropout: Fraction | None = None
    bias: Bool = True
    mlp_expansion: PositiveFloat = 4.0
    d_ff: PositiveInt | None = None
    """Explicit MLP width; null = round(mlp_expansion * n_embd)."""


_DATASET = re.compile(r"^(kjv|text:.+|hf:.+)$")


class DataSection(_Strict):
    dataset: str = "kjv"
    tokenizer: str = "gpt2"

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        if not _DATASET.fullmatch(v):
            raise ValueError(f"unknown dataset {v!r} (use kjv, text:PATH or hf:NAME)")
        return v


class Budget(_Strict):
    """Stop at whichever comes first; at least one must be set."""

    seconds: PositiveFloat | None = None
    iters: PositiveInt | None = None
    tokens: PositiveInt | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Budget:
        if not self.model_fields_set:
            raise ValueError("empty budget: set at least one of seconds, iters, tokens")
        return self


class CouplingWarmup(_Strict):
    fraction: Annotated[float, Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False)] = 0.0
    steps: NonNegativeInt | None = None


class TrainSection(_Strict):
    budget: Budget | None = None
    batch_size: PositiveInt = 8
    grad_accum: PositiveInt = 1
    lr: PositiveFloat = 6e-4
    min_lr: NonNegFloat = 6e-5
    warmup: NonNegativeInt = 20
    schedule_horizon: Literal["budget", "max_iters"] = "budget"
    max_iters: PositiveInt = 10000
    weight_decay: NonNegFloat = 0.1
    grad_clip: NonNegFloat = 1.0
    eval_every: PositiveInt = 50
    eval_batches: PositiveInt = 20
    log_every: PositiveInt = 10
    checkpoint_every: PositiveInt | None = None
    stats_every: PositiveInt = 50
    coupling_warmup: CouplingWarmup = CouplingWarmup()
    device: Annotated[str, StringConstraints(pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    compile: Bool = False


class Spam(_Strict):
    spike_clip_theta: PositiveFloat = 50.0
    spike_z: PositiveFloat = 2.0
    reset_interval: NonNegativeInt = 1000
    rewarm_steps: NonNegativeInt = 1000
    legacy_double_count: Bool = False
    spike_test_previous: Bool = False


class OptimizerSection(_Strict):
    name: Literal["adamw", "adamwspam"] = "adamwspam"
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    amsgrad: Bool = True
    spam: Spam = Spam()


class WandbSection(_Strict):
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str | None = None
    entity: str | None = None


def _check_seeds(v: list[int] | None) -> list[int] | None:
    if v is None:
        return v
    if not v:
        raise ValueError("empty seeds: list at least one, e.g. [1]")
    dupes = sorted({s for s in v if v.count(s) > 1})
    if dupes:
        raise ValueError(f"duplicate seed(s) {', '.join(map(str, dupes))}: list each seed once")
    return v


class Defaults(_Strict):
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    train: TrainSection = TrainSection()
    optimizer: OptimizerSection = OptimizerSection()
    seeds: list[Seed] = [1]
    wandb: WandbSection = WandbSection()
    priority: Int = 0
    max_attempts: Annotated[int, Field(strict=True, ge=1, le=100)] = 3

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        return _check_seeds(v) or v


def _mechanism(v: Any) -> Any:
    """`ra` -> {ra: {}}; {ra: null} -> {ra: {}}; {} / null -> null (inherit)."""
    if v is None:
        return None
    if isinstance(v, str):
        return {v: {}}
    if isinstance(v, Mapping):
        if not v:
            return None
        if len(v) > 1:
            raise ValueError(
                f"one mechanism per slot, got {len(v)}: {', '.join(map(str, v))}; "
                "write e.g. {ra: {R: 4}}"
            )
        ((name, knobs),) = v.items()
        return {name: {} if knobs is None else knobs}
    return v


class Step(_Strict):
    parent: str | None = None
    description: str = ""
    attention: dict[str, dict[str, Any]] | None = None
    mlp: dict[str, dict[str, Any]] | None = None
    model: ModelSection | None = None
    data: DataSection | None = None
    train: TrainSection | None = None
    optimizer: OptimizerSection | None = None
    seeds: list[Seed] | None = None
    expect: dict[str, tuple[Float, Float]] = {}

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int] | None) -> list[int] | None:
        return _check_seeds(v)

    @field_validator("attention", "mlp", mode="before")
    @classmethod
    def _one_mechanism(cls, v: Any) -> Any:
        return _mechanism(v)

    @field_validator("parent", mode="before")
    @classmethod
    def _parent_id(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("expect")
    @classmethod
    def _ranges(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for metric, (lo, hi) in v.items():
            if lo > hi:
                raise SpecProblem((metric,), f"range [{lo}, {hi}] is reversed: write [{hi}, {lo}]")
        return v

    @property
    def attn_name(self) -> str | None:
        return next(iter(self.attention)) if self.attention else None

    @property
    def mlp_name(self) -> str | None:
        return next(iter(self.mlp)) if self.mlp else None


_CONDITIONS = ("worse_than", "not_better_than", "better_than",
               "outside_expected", "diverged", "gate_collapsed", "no_gradient", "failed",
               "slower")
_COMPARISONS = ("worse_than", "not_better_than", "better_than")


Alpha = Annotated[float, Field(gt=0.0, lt=1.0)]


class Pair(_Strict):
    """A declared comparison a vs b; `alpha`/`margin` override the study's for this pair.
    `control: true` declares an intended control (e.g. an A/A pair: two steps that differ
    only in name), which the duplicate-model check accepts."""

    a: str
    b: str
    label: str = ""
    control: bool = False
    alpha: Alpha | None = None
    margin: NonNegativeFloat | None = None


class Rule(_Strict):
    """A troubleshooting rule: when `step` meets the one condition given, say `say`."""

    step: str | None = None
    worse_than: str | None = None
    not_better_than: str | None = None
    better_than: str | None = None
    outside_expected: bool | None = None
    diverged: bool | None = None
    gate_collapsed: bool | None = None
    no_gradient: bool | None = None
    failed: bool | None = None
    slower: bool | None = None
    metric: str | None = None
    say: str

    @model_validator(mode="after")
    def _one_condition(self) -> Rule:
        given = [c for c in _CONDITIONS if getattr(self, c) not in (None, False)]
        if len(given) != 1:
            raise ValueError(
                f"a rule needs exactly one condition, got {len(given)}"
                f"{': ' + ', '.join(given) if given else ''} (one of {', '.join(_CONDITIONS)})"
            )
        if given[0] in _COMPARISONS and self.step is None:
            raise ValueError(f"rule with {given[0]} needs `step:`")
        return self

    @property
    def condition(self) -> str:
        return next(c for c in _CONDITIONS if getattr(self, c) not in (None, False))

    @property
    def other(self) -> str | None:
        """The step compared against (for worse_than / not_better_than / better_than)."""
        value = getattr(self, self.condition)
        return value if isinstance(value, str) else None


class Analysis(_Strict):
    """How `recip report` decides (docs/specs.md, "Verdicts"): `alpha` is the two-sided
    level of every comparison (Holm across the study's comparisons); `margin` the
    equivalence margin (None: the noise floor, else 0: no `equivalent` verdict)."""

    pairs: list[Pair] = []
    rules: list[Rule] = []
    noise_floor: NonNegativeFloat | None = None
    metric: str = "best_val_loss"
    alpha: Alpha = 0.05
    margin: NonNegativeFloat | None = None

    @property
    def controls(self) -> tuple[tuple[str, str], ...]:
        """(a, b) of the pairs declared as intended controls."""
        return tuple((p.a, p.b) for p in self.pairs if p.control)


class Spec(_Strict):
    """A whole study; `steps` keeps the order in which the file lists them."""

    study: Name
    description: str = ""
    code: Literal["head", "pinned"] = "head"
    pinned_sha: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{7,40}$")] | None = None
    defaults: Defaults = Defaults()
    steps: dict[str, Step]
    analysis: Analysis = Analysis()

    @field_validator("steps", mode="before")
    @classmethod
    def _steps(cls, v: Any) -> Any:
        if v is None or (isinstance(v, Mapping) and not v):
            raise ValueError("no steps: add at least one, e.g. `steps: {V0: {description: baseline}}`")
        if not isinstance(v, Mapping):
            return v
        out: dict[str, Any] = {}
        for key, body in v.items():
            sid = str(key) if isinstance(key, int) and not isinstance(key, bool) else key
            if not isinstance(sid, str) or not _NAME.fullmatch(sid):
                raise SpecProblem((str(key),), f"invalid step id {key!r}: {NAME_FIX}")
            out[sid] = {} if body is None else body
        return out

    @model_validator(mode="after")
    def _structure(self) -> Spec:
        ids = list(self.steps)
        listed = ", ".join(ids)
        for sid, step in self.steps.items():
            if step.parent is not None and step.parent not in self.steps:
                others = ", ".join(i for i in ids if i != sid) or "none"
                raise SpecProblem(("steps", sid, "parent"),
                                  f"unknown parent {step.parent!r} (steps: {others})")
        for sid in ids:
            cycle = _cycle_from(self.steps, sid)
            if cycle:
                raise SpecProblem(
                    ("steps", sid, "parent"),
                    f"parent cycle {' -> '.join(cycle)}: one step of the cycle needs no parent",
                )
        if self.code == "pinned" and self.pinned_sha is None:
            raise SpecProblem(("pinned_sha",), "code: pinned needs pinned_sha: <git commit>")
        if self.code == "head" and self.pinned_sha is not None:
            raise SpecProblem(("code",), "pinned_sha is set but code is head: write `code: pinned`")
        for i, pair in enumerate(self.analysis.pairs):
            for side in ("a", "b"):
                ref = getattr(pair, side)
                if ref not in self.steps:
                    raise SpecProblem(("analysis", "pairs", i, side),
                                      f"unknown step {ref!r} (steps: {listed})")
        for i, rule in enumerate(self.analysis.rules):
            for key in ("step", rule.condition):
                ref = getattr(rule, key)
                if isinstance(ref, str) and ref not in self.steps:
                    raise SpecProblem(("analysis", "rules", i, key),
                                      f"unknown step {ref!r} (steps: {listed})")
        return self

    def lineage(self, step: str) -> list[str]:
        """Step ids from the root ancestor down to `step`."""
        chain = [step]
        while (parent := self.steps[chain[-1]].parent) is not None:
            chain.append(parent)
        return chain[::-1]


def _cycle_from(steps: Mapping[str, Step], start: str) -> list[str]:
    seen: list[str] = []
    cur: str | None = start
    while cur is not None and cur in steps:
        if cur in seen:
            return seen[seen.index(cur):] + [cur] if cur == start else []
        seen.append(cur)
        cur = steps[cur].parent
    return []
