"""TrainConfig: the resolved run config (docs/architecture.md) as frozen dataclasses.

`TrainConfig.from_dict(json.load(open("config.json")))` reads what the resolver wrote;
`to_dict()` gives the same object back (defaults filled in). Missing keys take the defaults
below (the resolver always writes every key); unknown keys raise ValueError naming the key,
so a typo never trains silently with a default.

Keys read here beyond the architecture.md example (additive, all optional):
  train.eval_at_start (true), data.config (null), data.tokens (null).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from models.config import GPTConfig
from models.presets import PRESETS, TOKENIZER_VOCAB


@dataclass(frozen=True)
class BudgetSpec:
    seconds: float | None = None     # training-clock seconds (eval/checkpoint excluded)
    iters: int | None = None         # optimizer steps
    tokens: int | None = None        # training tokens seen

    def __post_init__(self):
        if self.seconds is None and self.iters is None and self.tokens is None:
            raise ValueError("train.budget needs at least one of seconds, iters, tokens")
        for name in ("seconds", "iters", "tokens"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"train.budget.{name} must be > 0, got {v}")


@dataclass(frozen=True)
class CouplingWarmupSpec:
    fraction: float = 0.0            # of the planned run (budget progress); 0 = always 1.0
    steps: int | None = None         # explicit iteration count; wins over fraction

    def __post_init__(self):
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"train.coupling_warmup.fraction must be in [0, 1], got {self.fraction}")
        if self.steps is not None and self.steps < 0:
            raise ValueError(f"train.coupling_warmup.steps must be >= 0, got {self.steps}")


@dataclass(frozen=True)
class TrainSpec:
    budget: BudgetSpec = field(default_factory=lambda: BudgetSpec(seconds=60.0))
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 6e-4
    min_lr: float = 6e-5
    warmup: int = 20
    schedule_horizon: str = "budget"   # "budget" (decision 8) or "max_iters" (upstream)
    max_iters: int = 10000
    weight_decay: float = 0.1
    grad_clip: float = 1.0             # 0 = off
    eval_every: int = 50
    eval_batches: int = 20
    eval_at_start: bool = True
    log_every: int = 10
    checkpoint_every: int | None = None   # None = at every eval
    stats_every: int = 50
    coupling_warmup: CouplingWarmupSpec = field(default_factory=CouplingWarmupSpec)
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    dtype: str = "auto"                # auto | float32 | bfloat16
    compile: bool = False

    def __post_init__(self):
        for name in ("batch_size", "grad_accum", "warmup", "max_iters", "eval_every",
                     "eval_batches", "log_every", "stats_every"):
            v = getattr(self, name)
            if v < (0 if name == "warmup" else 1):
                raise ValueError(f"train.{name} must be >= {0 if name == 'warmup' else 1}, got {v}")
        if self.schedule_horizon not in ("budget", "max_iters"):
            raise ValueError(f"train.schedule_horizon must be budget or max_iters, got {self.schedule_horizon!r}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"train.dtype must be auto, float32 or bfloat16, got {self.dtype!r}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError(f"train.checkpoint_every must be >= 1 or null, got {self.checkpoint_every}")
        if not 0.0 <= self.min_lr <= self.lr:
            raise ValueError(f"train.min_lr must be in [0, lr], got {self.min_lr} (lr {self.lr})")


@dataclass(frozen=True)
class SpamSpec:
    spike_clip_theta: float | None = 50.0   # element clip |g| <= sqrt(theta * v); None/0 = off
    spike_z: float | None = 2.0             # z-score of the grad norm for a soft reset; None = off
    reset_interval: int | None = 1000       # periodic moment reset, in optimizer steps; None/0 = off
    rewarm_steps: int | None = 1000         # LR re-warm after a periodic reset; None/0 = off
    legacy_double_count: bool = False       # upstream's counter advanced twice per step
    spike_test_previous: bool = False       # earlier rule: z test needs 10 previous norms (§14.1: 10 incl. this one)


@dataclass(frozen=True)
class OptimizerSpec:
    name: str = "adamwspam"                 # adamw | adamwspam
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    amsgrad: bool = True
    spam: SpamSpec = field(default_factory=SpamSpec)

    def __post_init__(self):
        if self.name not in ("adamw", "adamwspam"):
            raise ValueError(f"optimizer.name must be adamw or adamwspam, got {self.name!r}")


@dataclass(frozen=True)
class DataSpec:
    dataset: str = "kjv"
    tokenizer: str = "gpt2"
    config: str | None = None
    tokens: int | None = None


@dataclass(frozen=True)
class WandbSpec:
    mode: str = "offline"                   # offline | online | disabled
    project: str | None = None              # None = the study name
    entity: str | None = None

    def __post_init__(self):
        if self.mode not in ("offline", "online", "disabled"):
            raise ValueError(f"wandb.mode must be offline, online or disabled, got {self.mode!r}")


@dataclass(frozen=True)
class TrainConfig:
    study: str = "adhoc"
    step: str = "V0"
    seed: int = 1
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "tiny"})
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    wandb: WandbSpec = field(default_factory=WandbSpec)

    def gpt_config(self) -> GPTConfig:
        """The model shape: preset sizes, then explicit keys, vocab from the tokenizer."""
        d = dict(self.model)
        preset = d.pop("preset", None)
        base: dict[str, Any] = {}
        if preset is not None:
            if preset not in PRESETS:
                raise ValueError(f"unknown model preset {preset!r} (known: {', '.join(PRESETS)})")
            base.update(PRESETS[preset])
        base.setdefault("vocab_size", TOKENIZER_VOCAB.get(self.data.tokenizer, 50304))
        base.update(d)
        return GPTConfig.from_dict(base)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["optimizer"]["betas"] = list(self.optimizer.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = copy.deepcopy(d)
        _check_keys(d, cls, "")
        train = dict(d.get("train", {}))
        _check_keys(train, TrainSpec, "train.")
        if "budget" in train:
            _check_keys(train["budget"], BudgetSpec, "train.budget.")
            train["budget"] = BudgetSpec(**train["budget"])
        if "coupling_warmup" in train:
            _check_keys(train["coupling_warmup"], CouplingWarmupSpec, "train.coupling_warmup.")
            train["coupling_warmup"] = CouplingWarmupSpec(**train["coupling_warmup"])
        opt = dict(d.get("optimizer", {}))
        _check_keys(opt, OptimizerSpec, "optimizer.")
        if "spam" in opt:
            _check_keys(opt["spam"], SpamSpec, "optimizer.spam.")
            opt["spam"] = SpamSpec(**opt["spam"])
        if "betas" in opt:
            opt["betas"] = tuple(opt["betas"])
        for key, spec in (("data", DataSpec), ("wandb", WandbSpec)):
            _check_keys(d.get(key, {}), spec, f"{key}.")
        return cls(
            study=d.get("study", "adhoc"), step=d.get("step", "V0"), seed=int(d.get("seed", 1)),
            model=dict(d.get("model", {"preset": "tiny"})),
            data=DataSpec(**d.get("data", {})), train=TrainSpec(**train),
            optimizer=OptimizerSpec(**opt), wandb=WandbSpec(**d.get("wandb", {})),
        )


def _check_keys(d: dict[str, Any], cls: type, prefix: str) -> None:
    if not isinstance(d, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'} must be an object, got {type(d).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown config key {prefix}{unknown[0]} (known: {', '.join(sorted(known))})")
