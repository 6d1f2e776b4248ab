"""The hostile corpus: specs and command lines an attacker or a careless user would try, each
either rejected within its time limit with exactly one stderr line (`error: ...`, exit 1, or
click's usage error, exit 2), no traceback, no secret and nothing stored changed; or accepted,
as documented per case (`accept=True`).

Time limits: the structural limits (size, nesting, aliases) answer within LIMIT_S; every other
case within DEFAULT_S (the in-process CLI on a shared, loaded 2-core machine).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from orchestrator.cli.app import run
from tests.cli.test_bad_input import SECRET, World, stored, world  # noqa: F401 - the fixture

LIMIT_S = 2.0
DEFAULT_S = 10.0

HEAD = ("study: h\ndefaults:\n  model: {preset: tiny}\n  data: {dataset: kjv, tokenizer: byte}\n"
        "  train: {budget: {iters: 5}}\n")
STEPS = "steps:\n  V0: {description: baseline}\n"


def spec(body: str = "", steps: str = STEPS) -> str:
    return HEAD + body + steps


def bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return spec() + "\n".join(lines) + "\n"


def in_defaults(line: str) -> str:
    return spec().replace("  train: {budget: {iters: 5}}\n",
                          f"  train: {{budget: {{iters: 5}}}}\n  {line}\n")


def deep_block(depth: int) -> str:
    return "study: h\nsteps:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(depth)) \
        + "  " * (depth + 1) + "v\n"


@dataclass(frozen=True)
class Case:
    text: str | bytes | None = None
    """The spec file's content (None: `argv` names its own file)."""
    argv: tuple[str, ...] = ()
    """Extra arguments after `queue submit FILE --no-check` (or the whole command line when
    `command` is set)."""
    expect: str = ""
    """A fragment of the one stderr line (for a rejection)."""
    code: int = 1
    accept: bool = False
    limit_s: float = DEFAULT_S
    command: bool = False
    env: tuple[tuple[str, str], ...] = ()
    setup: Callable[[World], None] | None = None


def _dir(w: World) -> None:
    (w.tmp / "adir").mkdir()


SPECS: dict[str, Case] = {
    # structure limits
    "alias-bomb-9": Case(bomb(9), expect="YAML aliases expand to more than 100,000 values",
                         limit_s=LIMIT_S),
    "alias-bomb-6": Case(bomb(6), expect="YAML aliases expand to more than", limit_s=LIMIT_S),
    "recursive-alias": Case("study: h\nsteps: &a {V0: *a}\n",
                            expect="a YAML alias refers to the node that contains it",
                            limit_s=LIMIT_S),
    "deep-flow-seq": Case("study: h\nsteps: " + "[" * 5000 + "]" * 5000 + "\n",
                          expect="nested deeper than 64 levels", limit_s=LIMIT_S),
    "deep-flow-map": Case("study: h\nsteps: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
                          expect="nested deeper than 64 levels", limit_s=LIMIT_S),
    "deep-unclosed": Case("study: h\nsteps: " + "[" * 900_000 + "\n",
                          expect="nested deeper than 64 levels", limit_s=LIMIT_S),
    "deep-block": Case(deep_block(80), expect="nested deeper than 64 levels", limit_s=LIMIT_S),
    "over-1mb": Case(spec() + "#" * 1_100_000 + "\n", expect="larger than 1,000,000 bytes",
                     limit_s=LIMIT_S),
    "dev-zero": Case(None, ("/dev/zero",), expect="/dev/zero: larger than 1,000,000 bytes",
                     limit_s=LIMIT_S, command=True),
    "size-env-override": Case(spec("description: " + "x" * 3000 + "\n"),
                              expect="larger than 1,000 bytes", env=(("RECIP_SPEC_MAX_BYTES",
                                                                      "1000"),)),
    "size-env-garbage": Case(spec(), expect="RECIP_SPEC_MAX_BYTES='many' is not a number",
                             env=(("RECIP_SPEC_MAX_BYTES", "many"),)),
    # not text / not one document
    "dev-null": Case(None, ("/dev/null",), expect="/dev/null: the file is empty", command=True),
    "a-directory": Case(None, ("{tmp}/adir",), expect="is a directory, not a spec file",
                        command=True, setup=_dir),
    "png": Case(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", expect="not a text file"),
    "nul-bytes": Case("study: h\x00\nsteps: {V0: {}}\n", expect="contains NUL bytes"),
    "utf16": Case("study: h\n".encode("utf-16"), expect="not a text file"),
    "control-char": Case("study: h\x1f\nsteps: {V0: {}}\n", expect="not valid YAML"),
    "two-documents": Case(spec() + "---\n" + spec(), expect="not valid YAML"),
    "top-level-list": Case("- study: h\n", expect="the file holds a list, not a YAML mapping"),
    "top-level-scalar": Case("just words\n", expect="the file holds a str"),
    "top-level-int-key": Case("1: x\nstudy: h\nsteps: {V0: {}}\n", expect="unknown top-level key 1"),
    "tabs": Case("study: h\nsteps:\n\tV0: {}\n", expect="not valid YAML"),
    "python-tag": Case("study: !!python/object/apply:os.system [echo hi]\nsteps: {V0: {}}\n",
                       expect="not valid YAML"),
    "bad-binary": Case("study: !!binary '%%%'\nsteps: {V0: {}}\n", expect="invalid name b''"),
    "empty-float-tag": Case(spec("description: !!float ''\n"),
                            expect="'' is not a number"),
    "bad-timestamp": Case("study: 2001-13-45\nsteps: {V0: {}}\n",
                          expect="not a valid YAML value (month must be in 1..12)"),
    "merge-of-scalar": Case("study: h\nx: &a 1\nsteps: {V0: {<<: *a}}\n", expect="h.yaml"),
    "duplicate-key": Case(spec("defaults: {}\n"), expect="duplicate key 'defaults'"),
    # non-finite and oversized numbers
    "lr-inf": Case(spec(steps="steps:\n  V0: {train: {lr: .inf}}\n"),
                   expect="steps.V0.train.lr: .inf is not a finite number"),
    "seconds-nan": Case(spec(steps="steps:\n  V0: {train: {budget: {seconds: .nan}}}\n"),
                        expect="steps.V0.train.budget.seconds: .nan is not a finite number"),
    "grad-clip-neg-inf": Case(spec(steps="steps:\n  V0: {train: {grad_clip: -.Inf}}\n"),
                              expect="grad_clip: -.Inf is not a finite number"),
    "overflow-float": Case(spec(steps="steps:\n  V0: {train: {lr: 1e999}}\n"),
                           expect="lr: 1e999 is not a finite number"),
    "knob-inf": Case(spec(steps="steps:\n  V0: {attention: {ra: {R: .inf}}}\n"),
                     expect="steps.V0.attention.ra.R: .inf is not a finite number"),
    "expect-inf": Case(spec(steps="steps:\n  V0: {expect: {val_loss: [0, .inf]}}\n"),
                       expect="steps.V0.expect.val_loss[1]: .inf is not a finite number"),
    "explicit-float-tag-inf": Case(spec(steps="steps:\n  V0: {train: {lr: !!float inf}}\n"),
                                   expect="is not a finite number"),
    "huge-int": Case(spec(steps="steps:\n  V0: {train: {max_iters: " + "9" * 5000 + "}}\n"),
                     expect="integer of 5000 characters is too large"),
    # strict types
    "seed-true": Case(spec(steps="steps:\n  V0: {seeds: [true]}\n"),
                      expect="steps.V0.seeds[0]: expected an integer, got the boolean true"),
    "seed-quoted": Case(spec(steps="steps:\n  V0: {seeds: ['1']}\n"),
                        expect="expected an integer, got the quoted string '1'"),
    "seed-float": Case(spec(steps="steps:\n  V0: {seeds: [1.0]}\n"),
                       expect="expected an integer, got 1.0: write a whole number"),
    "seed-negative": Case(spec(steps="steps:\n  V0: {seeds: [-1]}\n"),
                          expect="steps.V0.seeds[0]: input should be greater than or equal to 0"),
    "seed-2-32": Case(spec(steps="steps:\n  V0: {seeds: [4294967296]}\n"),
                      expect="input should be less than 4294967296"),
    "lr-quoted": Case(spec(steps="steps:\n  V0: {train: {lr: '6e-4'}}\n"),
                      expect="expected a number, got the quoted string '6e-4': write it without quotes"),
    "batch-yes": Case(spec(steps="steps:\n  V0: {train: {batch_size: yes}}\n"),
                      expect="expected an integer, got the boolean true (YAML reads yes"),
    "batch-off": Case(spec(steps="steps:\n  V0: {train: {batch_size: off}}\n"),
                      expect="got the boolean false"),
    "batch-fraction": Case(spec(steps="steps:\n  V0: {train: {batch_size: 8.5}}\n"),
                           expect="expected an integer, got 8.5"),
    "compile-quoted-yes": Case(spec(steps="steps:\n  V0: {train: {compile: 'yes'}}\n"),
                               expect="expected true or false, got 'yes'"),
    "priority-no": Case(in_defaults("priority: no"),
                        expect="defaults.priority: expected an integer, got the boolean false"),
    "max-attempts-0": Case(in_defaults("max_attempts: 0"),
                           expect="defaults.max_attempts: input should be greater than or equal to 1"),
    "dropout-1.5": Case(spec(steps="steps:\n  V0: {model: {dropout: 1.5}}\n"),
                        expect="steps.V0.model.dropout: input should be less than 1"),
    "betas-one": Case(spec(steps="steps:\n  V0: {optimizer: {betas: [0.9]}}\n"),
                      expect="steps.V0.optimizer.betas"),
    "device-bogus": Case(spec(steps="steps:\n  V0: {train: {device: 'cuda:x'}}\n"),
                         expect="steps.V0.train.device: string should match pattern"),
    "dataset-ftp": Case(spec(steps="steps:\n  V0: {data: {dataset: 'ftp://x'}}\n"),
                        expect="unknown dataset 'ftp://x'"),
    # names: full match, no paths
    "step-newline": Case('study: h\nsteps: {"V0\\n": {}}\n',
                         expect="steps['V0\\n']: invalid step id 'V0\\n'"),
    "step-slash": Case("study: h\nsteps: {V0/../x: {}}\n",
                       expect="invalid step id 'V0/../x'"),
    "step-dotdot": Case("study: h\nsteps: {'..': {}}\n", expect="invalid step id '..'"),
    "step-unicode": Case("study: h\nsteps: {Vé: {}}\n", expect="invalid step id 'Vé'"),
    "step-null": Case("study: h\nsteps: {null: {}}\n", expect="invalid step id None"),
    "step-bool": Case("study: h\nsteps: {yes: {}}\n", expect="invalid step id True"),
    "study-newline": Case('study: "h\\n"\nsteps: {V0: {}}\n', expect="invalid name 'h\\n'"),
    "study-path": Case("study: ../etc\nsteps: {V0: {}}\n", expect="invalid name '../etc'"),
    "study-space": Case("study: my study\nsteps: {V0: {}}\n", expect="invalid name 'my study'"),
    "study-long": Case("study: " + "s" * 101 + "\nsteps: {V0: {}}\n",
                       expect="string should have at most 100 characters"),
    "parent-newline": Case('study: h\nsteps: {V0: {}, V1: {parent: "V0\\n"}}\n',
                           expect="unknown parent 'V0\\n'"),
    # structure
    "two-mechanisms": Case(spec(steps="steps:\n  V0: {attention: {ra: {}, mla: {}}}\n"),
                           expect="one mechanism per slot, got 2"),
    "parent-cycle": Case("study: h\nsteps: {A: {parent: B}, B: {parent: A}}\n",
                         expect="parent cycle"),
    "pinned-no-sha": Case("study: h\ncode: pinned\nsteps: {V0: {}}\n",
                          expect="code: pinned needs pinned_sha"),
    "expect-reversed": Case(spec(steps="steps:\n  V0: {expect: {val_loss: [3, 1]}}\n"),
                            expect="range [3.0, 1.0] is reversed"),
    # accepted, as a user would expect
    "ok-yaml12-float": Case(spec(steps="steps:\n  V0: {train: {lr: 3e-4, min_lr: 1E-5}}\n"),
                            accept=True),
    "ok-numeric-step-id": Case(spec(steps="steps:\n  3: {}\n"), accept=True),
    "ok-shared-alias": Case("study: h\ndefaults: &d\n  model: {preset: tiny}\n  data: {dataset: "
                            "kjv, tokenizer: byte}\n  train: {budget: {iters: 5}}\nsteps:\n"
                            "  V0: {train: {budget: {iters: 5}, lr: 0.001}}\n", accept=True),
    "ok-emoji-description": Case(spec("description: \"ablation \U0001F9EA \u00e9\"\n"),
                                 accept=True),
    "ok-crlf": Case(spec().replace("\n", "\r\n"), accept=True),
    "ok-utf8-bom": Case("\ufeff" + spec(), accept=True),
    "ok-yes-for-a-bool": Case(spec(steps="steps:\n  V0: {train: {compile: no}}\n"), accept=True),
    "ok-null-step-body": Case(spec(steps="steps:\n  V0:\n"), accept=True),
}

COMMANDS: dict[str, Case] = {
    "set-inf": Case(spec(), ("--set", "train.lr=.inf"),
                    expect="--set: train.lr: .inf is not a finite number"),
    "set-overflow": Case(spec(), ("--set", "train.lr=1e999"),
                         expect="--set: train.lr: 1e999 is not a finite number"),
    "set-nested-inf": Case(spec(), ("--set", "train.budget={{seconds: -.inf}}"),
                           expect="is not a finite number"),
    "set-quoted-number": Case(spec(), ("--set", "train.lr='6e-4'"),
                              expect="train.lr: expected a number, got the quoted string"),
    "set-yes-for-int": Case(spec(), ("--set", "train.batch_size=yes"),
                            expect="train.batch_size: expected an integer, got the boolean"),
    "set-float-for-int": Case(spec(), ("--set", "model.n_layer=1e3"),
                              expect="model.n_layer: expected an integer, got 1000.0"),
    "set-deep": Case(spec(), ("--set", "train.x=" + "[" * 200 + "]" * 200),
                     expect="nested deeper than 64 levels", limit_s=LIMIT_S),
    "set-ok-yaml12": Case(spec(), ("--set", "train.lr=3e-4"), accept=True),
    "time-inf": Case(spec(), ("--time", "inf"),
                     expect="--time: must be a finite number of seconds, got inf"),
    "time-nan": Case(spec(), ("--time", "nan"), expect="--time: must be a finite number of "
                                                       "seconds, got nan"),
    "time-overflow": Case(spec(), ("--time", "1e309"), expect="got inf"),
    "time-negative": Case(spec(), ("--time", "-5"), expect="--time: must be > 0 seconds"),
    "seeds-bool": Case(spec(), ("--seeds", "1,true"), expect="--seeds: expected comma-separated"),
    "seeds-negative": Case(spec(), ("--seeds", "-1"), expect="--seeds"),
    "max-iters-0": Case(spec(), ("--max-iters", "0"), expect="--max-iters: must be > 0"),
    # accepted: --steps is a comma-separated list whose items are stripped
    "steps-newline": Case(spec(), ("--steps", "V0\n"), accept=True),
    "steps-unknown": Case(spec(), ("--steps", "V0,V0/../x"), expect="no step 'V0/../x'"),
    "db-memory-mode": Case(spec(), ("--db", "sqlite:///{tmp}/m.db?mode=memory"),
                           expect="unsupported SQLite URL option mode='memory'"),
    "db-in-memory": Case(spec(), ("--db", "sqlite:///:memory:"),
                         expect="an in-memory SQLite database cannot be shared"),
    "db-raw-at-password": Case(spec(), ("--db",
                               "postgresql://u:{secret}@x@127.0.0.1:1/q"),
                               expect="cannot connect to postgresql://u:***@127.0.0.1:1/q"),
    "db-query-password": Case(spec(), ("--db",
                              "postgresql://u@127.0.0.1:1/q?password={secret}"),
                              expect="postgresql://u@127.0.0.1:1/q?password=***"),
}

CLI: dict[str, Case] = {
    "code-root-missing": Case(argv=("resume", "study", "--code-root", "/nonexistent",
                                    "--db", "{db}"),
                              expect="--code-root /nonexistent: no such directory",
                              command=True),
    "fresh-empty": Case(argv=("resume", "study", "--fresh", ",", "--db", "{db}"),
                        expect="name at least one step, e.g. --fresh V1", code=2, command=True),
    "show-step-newline": Case(argv=("show", "study", "V0\n", "--db", "{db}"),
                              expect="no step 'V0\\n' in study 'study'", command=True),
    "status-study-newline": Case(argv=("status", "study\n", "--db", "{db}"),
                                 expect="no study 'study\\n'", command=True),
    "status-bad-sqlite-option": Case(argv=("status", "--db", "{db}?cache=shared"),
                                     expect="unsupported SQLite URL option cache='shared'",
                                     command=True),
    "status-read-only": Case(argv=("status", "--json", "--db", "{db}?mode=ro"), accept=True,
                             command=True),
    "cancel-read-only": Case(argv=("queue", "cancel", "study", "--db", "{db}?mode=ro"),
                             expect="is open read-only (?mode=ro) and this command writes",
                             command=True),
}

ALL = {**{f"spec:{k}": v for k, v in SPECS.items()},
       **{f"cmd:{k}": v for k, v in COMMANDS.items()},
       **{f"cli:{k}": v for k, v in CLI.items()}}


def test_the_corpus_is_broad() -> None:
    assert len(ALL) >= 60
    assert sum(c.accept for c in ALL.values()) >= 8


@pytest.mark.parametrize("name", sorted(ALL))
def test_hostile_input(name: str, world: World, capfd: pytest.CaptureFixture[str],  # noqa: F811
                       monkeypatch: pytest.MonkeyPatch) -> None:
    case = ALL[name]
    for key, value in case.env:
        monkeypatch.setenv(key, value)
    if case.setup is not None:
        case.setup(world)
    if case.command and case.text is None and not case.argv[0].startswith(("/", "{")):
        argv = [world.fill(a) for a in case.argv]
    else:
        path = world.tmp / "h.yaml"
        if case.text is not None:
            path.write_bytes(case.text if isinstance(case.text, bytes)
                             else case.text.encode("utf-8"))
        extra = list(case.argv)
        if case.text is None:  # the case names the file itself
            path_arg, extra = world.fill(extra[0]), extra[1:]
        else:
            path_arg = str(path)
        argv = ["queue", "submit", path_arg, "--no-check", *[world.fill(a) for a in extra]]
        if "--db" not in extra:
            argv += ["--db", world.db]
    run(["status", "--db", world.db])  # warm the imports: time the case, not Python
    capfd.readouterr()
    before = stored(world.db)
    t0 = time.monotonic()
    rc = run(argv)
    took = time.monotonic() - t0
    out, err = capfd.readouterr()
    assert SECRET not in out + err
    assert "Traceback" not in err
    if case.accept:
        assert rc == 0, err
        return
    assert took < case.limit_s, f"{name} took {took:.2f}s"
    assert rc == case.code, err
    assert out == ""
    lines = err.splitlines()
    if case.code == 1:
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert world.fill(case.expect) in lines[0], err
    else:
        assert world.fill(case.expect) in err, err
    assert stored(world.db) == before
