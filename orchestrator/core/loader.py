"""YAML file -> validated Spec, with every failure as one SpecError line naming file and path.

The YAML loader is a SafeLoader that rejects duplicate keys (PyYAML keeps the last one
silently) and reads `6e-4` as a float (YAML 1.2; PyYAML's 1.1 rules read it as a string).

Hostile input is bounded before anything big is built: the file is read up to
`max_spec_bytes()` (1 MB, `RECIP_SPEC_MAX_BYTES`), nesting deeper than `MAX_DEPTH` stops the
composer, and a document whose aliases expand to more than `MAX_NODES` nodes (a "billion
laughs" bomb) is refused before it is constructed; every node is walked once, aliased or
not. Every number must be finite and every integer of sane length (`.inf`, `.nan`, a
5,000-digit integer are refused naming the key).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from orchestrator.core.errors import SpecError
from orchestrator.core.spec import NAME_FIX, NAME_PATTERN, Spec, SpecProblem

Loc = tuple[str | int, ...]

_FLOAT_12 = re.compile(
    r"^[-+]?(?:\d[\d_]*\.[\d_]*(?:[eE][-+]?\d+)?|\.\d[\d_]*(?:[eE][-+]?\d+)?"
    r"|\d[\d_]*[eE][-+]?\d+|\.inf|\.Inf|\.INF|\.nan|\.NaN|\.NAN)$"
)


MAX_BYTES_ENV = "RECIP_SPEC_MAX_BYTES"
DEFAULT_MAX_BYTES = 1_000_000
MAX_DEPTH = 64
MAX_NODES = 100_000
MAX_INT_DIGITS = 40
_FLOAT_TAG = "tag:yaml.org,2002:float"
_INT_TAG = "tag:yaml.org,2002:int"


def max_spec_bytes() -> int:
    """The size cap of a spec file: $RECIP_SPEC_MAX_BYTES, else 1 MB."""
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise SpecError(f"{MAX_BYTES_ENV}={raw!r} is not a number of bytes; "
                        "set it to e.g. 2000000 or unset it") from None
    if value <= 0:
        raise SpecError(f"{MAX_BYTES_ENV}={raw!r} must be > 0; set it to e.g. 2000000 or unset it")
    return value


class _Limit(Exception):
    """A bound on the YAML structure was hit; `line` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class SpecLoader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader with YAML 1.2 floats (`6e-4`) and a nesting bound."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _Limit(mark.line + 1,
                             f"nested deeper than {MAX_DEPTH} levels: a study spec needs a few; "
                             "flatten the structure")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


SpecLoader.yaml_implicit_resolvers = {
    k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


_PLAIN_KEY = re.compile(r"[^\s.\[\]'\"]+")


def format_path(loc: Loc) -> str:
    """('steps', 'V3', 'seeds', 1) -> 'steps.V3.seeds[1]'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(str(part)):
            out += ("." if out else "") + str(part)
        else:  # a key with spaces, dots, newlines...: quoted, so the line stays one line
            out += f"[{str(part)!r}]"
    return out


def _check_sizes(root: yaml.Node) -> None:
    """_Limit when aliases expand the document past MAX_NODES nodes or refer to themselves;
    each node's expanded size is computed once."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise _Limit(node.start_mark.line + 1,
                         "a YAML alias refers to the node that contains it: remove the recursion")
        open_.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += size(k) + size(v)
                if total > MAX_NODES:
                    break
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += size(item)
                if total > MAX_NODES:
                    break
        open_.discard(key)
        if total > MAX_NODES:
            raise _Limit(node.start_mark.line + 1,
                         f"YAML aliases expand to more than {MAX_NODES:,} values: a study spec "
                         "needs a few hundred; write the values out or use fewer aliases")
        sizes[key] = total
        return total

    size(root)


def _check_scalar(node: yaml.ScalarNode, path: Loc) -> None:
    if node.tag == _FLOAT_TAG:
        try:
            value = SpecLoader.construct_yaml_float(_SCRATCH, node)
        except (ValueError, IndexError):  # `!!float ''`, `!!float abc`
            raise SpecProblem(path, f"{node.value!r} is not a number: write e.g. 0.5") from None
        if not math.isfinite(value):
            raise SpecProblem(path, f"{node.value} is not a finite number: write a finite value")
    elif node.tag == _INT_TAG and len(node.value) > MAX_INT_DIGITS:
        raise SpecProblem(path, f"integer of {len(node.value)} characters is too large: "
                                f"write at most {MAX_INT_DIGITS} digits")


_SCRATCH = SpecLoader("")


def _walk(node: yaml.Node, path: Loc, seen: set[int] | None = None) -> None:
    """Duplicate keys and non-finite numbers, each node visited once (aliases included)."""
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode):
        _check_scalar(node, path)
    elif isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None:
                line = key_node.start_mark.line + 1
                if key in first:
                    what = "step id" if path == ("steps",) else "key"
                    raise SpecProblem(
                        (*path, key),
                        f"duplicate {what} {key!r} (lines {first[key]} and {line}): "
                        "rename or remove one",
                    )
                first[key] = line
                _walk(value_node, (*path, key), seen)
            else:
                _walk(key_node, path, seen)
                _walk(value_node, path, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), seen)


_BRACKET = re.compile(r"[\[\]{}\n]")


def _check_flow_depth(text: str) -> None:
    """_Limit when `[`/`{` nest deeper than MAX_DEPTH (counted on the raw text, brackets in
    strings included): PyYAML's scanner is quadratic in the depth of flow collections, so
    this is checked before it runs."""
    depth, line = 0, 1
    for m in _BRACKET.finditer(text):
        c = m.group(0)
        if c == "\n":
            line += 1
        elif c in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise _Limit(line, f"nested deeper than {MAX_DEPTH} levels: a study spec needs "
                                   "a few; flatten the structure")
        elif depth:
            depth -= 1


def parse_yaml(text: str, *, file: str) -> Any:
    """Parse one YAML document, rejecting duplicate keys; SpecError on any YAML problem."""
    try:
        _check_flow_depth(text)
    except _Limit as e:
        raise SpecError(e.message, file=file, path=f"line {e.line}") from None
    try:
        loader = SpecLoader(text)
    except yaml.YAMLError as e:  # the reader refuses control characters up front
        raise SpecError(f"not valid YAML: {str(e).splitlines()[0]}", file=file) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError("the file is empty; a study spec starts with `study: NAME`", file=file)
        _check_sizes(node)
        try:
            _walk(node, ())
        except SpecProblem as p:
            raise SpecError(p.message, file=file, path=format_path(p.path)) from None
        try:
            return loader.construct_document(node)
        except (ValueError, OverflowError, TypeError, IndexError, KeyError) as e:
            # a value PyYAML's constructors choke on: a timestamp 2001-13-45, `!!int ''`
            line = (str(e).splitlines() or [type(e).__name__])[0]
            raise SpecError(f"not a valid YAML value ({line}): fix or quote it", file=file) from None
    except _Limit as e:
        raise SpecError(e.message, file=file, path=f"line {e.line}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        what = " ".join(str(x) for x in (e.context, e.problem) if x)
        raise SpecError(f"not valid YAML: {what}", file=file, path=where) from None
    except yaml.YAMLError as e:
        raise SpecError(f"not valid YAML: {str(e).splitlines()[0]}", file=file) from None
    finally:
        loader.dispose()


def read_text(path: str | Path) -> str:
    """The file's text; SpecError when it cannot be read, is not text, or is larger than
    `max_spec_bytes()` (read no further than the cap, so /dev/zero ends at once)."""
    file = str(path)
    limit = max_spec_bytes()
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except FileNotFoundError:
        raise SpecError("no such file", file=file) from None
    except IsADirectoryError:
        raise SpecError("is a directory, not a spec file", file=file) from None
    except OSError as e:
        raise SpecError(f"cannot read the file: {e.strerror or e}", file=file) from None
    if len(raw) > limit:
        raise SpecError(f"larger than {limit:,} bytes: a study spec is a few KB; check the path, "
                        f"or raise {MAX_BYTES_ENV}", file=file)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError("not a text file (not UTF-8); a study spec is YAML", file=file) from None
    if "\x00" in text:
        raise SpecError("not a text file (contains NUL bytes); a study spec is YAML", file=file)
    return text


def load_spec(path: str | Path) -> Spec:
    """Read, parse and validate a spec file."""
    file = str(path)
    return spec_from_data(parse_yaml(read_text(path), file=file), file=file)


def spec_from_text(text: str, *, file: str = "<spec>") -> Spec:
    """Parse and validate spec text (tests, stdin)."""
    return spec_from_data(parse_yaml(text, file=file), file=file)


def spec_from_data(data: Any, *, file: str) -> Spec:
    """Validate parsed YAML; the first problem becomes a one-line SpecError."""
    if not isinstance(data, Mapping):
        kind = "a list" if isinstance(data, list) else f"a {type(data).__name__}"
        raise SpecError(f"the file holds {kind}, not a YAML mapping; a study spec starts "
                        "with `study: NAME`", file=file)
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        raise SpecError(f"unknown top-level key {bad_keys[0]!r}", file=file,
                        path=str(bad_keys[0]))
    try:
        return Spec.model_validate(data)
    except ValidationError as e:
        raise to_spec_error(e, file=file) from None


_MISSING_FIX: dict[Loc, str] = {
    ("study",): "add `study: NAME` at the top of the file",
    ("steps",): "add `steps:` with at least one step, e.g. `steps: {V0: {description: baseline}}`",
}


def to_spec_error(err: ValidationError, *, file: str) -> SpecError:
    """The first pydantic error, as `file: path: message (+N more)`."""
    # a misspelt key also makes its correct spelling "missing": report the misspelling
    errors = sorted(err.errors(include_url=False), key=lambda e: e["type"] == "missing")
    first = errors[0]
    loc, message = _describe(first)
    more = len(errors) - 1
    if more:
        message += f" (+{more} more problem{'s' if more > 1 else ''})"
    return SpecError(message, file=file, path=format_path(loc) or None)


def describe_validation(err: ValidationError, root: type[BaseModel]) -> tuple[Loc, str]:
    """The path and message of the first problem of validating `root` (as spec errors word
    it), for callers that build their own line (`--set` validates one section)."""
    errors = sorted(err.errors(include_url=False), key=lambda e: e["type"] == "missing")
    return _describe(errors[0], root)


def _describe(e: Mapping[str, Any], root: type[BaseModel] | None = None) -> tuple[Loc, str]:
    loc: Loc = tuple(e["loc"])
    kind = e["type"]
    ctx = e.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, SpecProblem):
        return (*loc, *cause.path), cause.message
    if kind == "extra_forbidden":
        return loc, _unknown_key(loc, root or Spec)
    if kind == "missing":
        return loc, "required key is missing: " + _MISSING_FIX.get(loc, f"add `{loc[-1]}:`")
    msg = str(e["msg"])
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == NAME_PATTERN:
        return loc, f"invalid name {e.get('input')!r}: {NAME_FIX}"
    strict = _strict_type(kind, e.get("input"))
    if strict is not None:
        return loc, strict
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    else:
        msg = msg[:1].lower() + msg[1:]
        value = e.get("input")
        if isinstance(value, (str, int, float, bool)) or value is None:
            msg += f", got {value!r}"
        elif isinstance(value, (dict, list)):
            msg += f", got a {'mapping' if isinstance(value, dict) else 'list'}"
    return loc, msg


_NUMBER_KINDS = {"int_type": "an integer", "float_type": "a number",
                 "int_from_float": "an integer"}


def _strict_type(kind: str, value: Any) -> str | None:
    """The message for a value of the wrong type where the spec is strict, else None."""
    if kind == "finite_number":
        return f"{value!r} is not a finite number: write a finite value"
    want = _NUMBER_KINDS.get(kind)
    if want is not None:
        if isinstance(value, bool):
            return (f"expected {want}, got the boolean {str(value).lower()} (YAML reads yes, no, "
                    "on, off, true and false as booleans): write a number")
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                return f"expected {want}, got the string {value!r}"
            return f"expected {want}, got the quoted string {value!r}: write it without quotes"
        if isinstance(value, float):
            return f"expected {want}, got {value!r}: write a whole number"
        return None
    if kind == "bool_type" and not isinstance(value, bool):
        return f"expected true or false, got {value!r}"
    return None


def _unknown_key(loc: Loc, root: type[BaseModel]) -> str:
    key = str(loc[-1])
    known = _known_keys(loc[:-1], root)
    text = f"unknown key {key!r}"
    if known:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        if close:
            text += f"; did you mean {close[0]!r}?"
        text += f" (known: {', '.join(known)})"
    return text


def _known_keys(loc: Loc, root: type[BaseModel]) -> list[str]:
    """Field names of the model found at `loc` (walking annotations from `root`)."""
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        elif typing.get_origin(current) in (dict, list, tuple):
            args = typing.get_args(current)
            current = args[-1] if args else Any
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(tp: Any) -> Any:
    """Strip Optional[...] and Annotated[...]."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0] if len(args) == 1 else tp
            if len(args) != 1:
                return tp
        else:
            return tp
