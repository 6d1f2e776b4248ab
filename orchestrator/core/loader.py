"""YAML file -> validated Spec, with every failure as one SpecError line naming file and path.

The YAML loader is a SafeLoader that rejects duplicate keys (PyYAML keeps the last one
silently) and reads `6e-4` as a float (YAML 1.2; PyYAML's 1.1 rules read it as a string).
"""

from __future__ import annotations

import difflib
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


class SpecLoader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader with YAML 1.2 floats (`6e-4`)."""


SpecLoader.yaml_implicit_resolvers = {
    k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def format_path(loc: Loc) -> str:
    """('steps', 'V3', 'seeds', 1) -> 'steps.V3.seeds[1]'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _walk(node: yaml.Node, path: Loc) -> None:
    if isinstance(node, yaml.MappingNode):
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
                _walk(value_node, (*path, key))
            else:
                _walk(value_node, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i))


def parse_yaml(text: str, *, file: str) -> Any:
    """Parse one YAML document, rejecting duplicate keys; SpecError on any YAML problem."""
    loader = SpecLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError("the file is empty; a study spec starts with `study: NAME`", file=file)
        try:
            _walk(node, ())
        except SpecProblem as p:
            raise SpecError(p.message, file=file, path=format_path(p.path)) from None
        return loader.construct_document(node)
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
    """The file's text; SpecError when it cannot be read or is not text."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise SpecError("no such file", file=file) from None
    except IsADirectoryError:
        raise SpecError("is a directory, not a spec file", file=file) from None
    except OSError as e:
        raise SpecError(f"cannot read the file: {e.strerror or e}", file=file) from None
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


def _describe(e: Mapping[str, Any]) -> tuple[Loc, str]:
    loc: Loc = tuple(e["loc"])
    kind = e["type"]
    ctx = e.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, SpecProblem):
        return (*loc, *cause.path), cause.message
    if kind == "extra_forbidden":
        return loc, _unknown_key(loc)
    if kind == "missing":
        return loc, "required key is missing: " + _MISSING_FIX.get(loc, f"add `{loc[-1]}:`")
    msg = str(e["msg"])
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == NAME_PATTERN:
        return loc, f"invalid name {e.get('input')!r}: {NAME_FIX}"
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


def _unknown_key(loc: Loc) -> str:
    key = str(loc[-1])
    known = _known_keys(loc[:-1])
    text = f"unknown key {key!r}"
    if known:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        if close:
            text += f"; did you mean {close[0]!r}?"
        text += f" (known: {', '.join(known)})"
    return text


def _known_keys(loc: Loc) -> list[str]:
    """Field names of the model found at `loc` (walking annotations from Spec)."""
    current: Any = Spec
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
