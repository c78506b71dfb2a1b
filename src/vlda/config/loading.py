"""Reading a run configuration: YAML (``yaml.safe_load``) plus ``key=value`` overrides.

Overrides use dotted paths and YAML values: ``train.steps=500 method.tau=0.6 data.source=[art]``.
Every mistake becomes a :class:`ConfigError` of one sentence that names the key, the value and
what was expected; an unknown key names the closest valid one.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from vlda.config.sections import SECTIONS, TOP_KEYS, RunConfig


class ConfigError(ValueError):
    """A config file or override that cannot be used, with the reason (one sentence)."""


def suggest(key: str, valid: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest valid key, or ``""``."""
    close = difflib.get_close_matches(key, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_EXPECTED = {
    "float_parsing": "a number", "float_type": "a number",
    "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "an integer",
    "bool_parsing": "true or false", "bool_type": "true or false",
    "string_type": "a string", "list_type": "a list", "dict_type": "a mapping",
    "tuple_type": "a list", "model_type": "a mapping", "model_attributes_type": "a mapping",
}


def _key(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc)


def _valid_keys(loc: Sequence[Any]) -> list[str]:
    if len(loc) == 2 and loc[0] in SECTIONS:
        return list(SECTIONS[str(loc[0])].model_fields)
    if len(loc) == 1:
        return list(TOP_KEYS)
    return []


def describe(err: Mapping[str, Any]) -> str:
    """One pydantic error as one sentence: key, value, what was expected."""
    loc = tuple(err.get("loc", ()))
    key, kind, value = _key(loc), err.get("type", ""), err.get("input")
    if kind == "extra_forbidden":
        valid = _valid_keys(loc)
        what = "section" if len(loc) == 1 else "key"
        return f"unknown config {what} {key!r}{suggest(str(loc[-1]), valid)}; valid: {sorted(valid)}"
    if kind == "missing":
        return f"config key {key!r} is required"
    ctx = err.get("ctx") or {}
    if kind == "literal_error":
        expected = f"one of {ctx.get('expected', '')}"
    elif kind in _EXPECTED:
        expected = _EXPECTED[kind]
    elif kind == "value_error":
        return f"config {key or 'file'}: {ctx.get('error', err.get('msg'))}"
    else:
        msg = str(err.get("msg", ""))
        expected = msg.removeprefix("Input should be ") if msg.startswith("Input should be ") else msg
    return f"config key {key} = {value!r} is not valid: expected {expected}"


def validation_message(err: ValidationError, *prefix: str) -> str:
    """The first error of a pydantic validation as one sentence (:func:`describe`), its key
    prefixed (``"method"``: the options a method validates itself)."""
    first: dict[str, Any] = dict(err.errors()[0])
    first["loc"] = (*prefix, *first["loc"])
    return describe(first)


def build_config(raw: Mapping[str, Any]) -> RunConfig:
    """Validate a raw dict (from YAML + overrides) into a :class:`RunConfig`."""
    if not isinstance(raw, Mapping):
        raise ConfigError("a config must be a YAML mapping of sections")
    if "data" not in raw:
        raise ConfigError("config has no `data` section (data: {benchmark, root, source, target})")
    try:
        return RunConfig.model_validate(dict(raw))
    except ValidationError as err:
        raise ConfigError(validation_message(err)) from None


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply one ``a.b.c=value`` override (value parsed as YAML) to the raw config dict."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not of the form key=value")
    key, value = override.split("=", 1)
    parts = key.strip().split(".")
    if parts[0] not in TOP_KEYS:
        raise ConfigError(f"unknown config section {parts[0]!r}{suggest(parts[0], TOP_KEYS)}")
    try:
        parsed = yaml.safe_load(value) if value != "" else None
    except yaml.YAMLError:
        raise ConfigError(f"override {override!r}: the value is not valid YAML") from None
    node = raw
    for p in parts[:-1]:
        if isinstance(node.get(p), str) and p in ("method", "gradients"):
            node[p] = {"name": node[p]}
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {p!r} is not a section")
    node[parts[-1]] = parsed
    # The run length is set by one of the two; the one named on the command line wins.
    sibling = {"train.steps": "epochs", "train.epochs": "steps"}.get(".".join(parts))
    if sibling is not None:
        node.pop(sibling, None)


def read_raw(path: str | Path | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The raw dict of a YAML file (``safe_load``) with the overrides applied."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise ConfigError(f"config file {path} is not valid YAML{where}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must be a mapping of sections, not a {type(loaded).__name__}")
        raw = copy.deepcopy(loaded or {})
    for o in overrides:
        apply_override(raw, o)
    return raw


def load_config(path: str | Path | None, overrides: Sequence[str] | None = None) -> RunConfig:
    """Read ``path`` (YAML, safe loader), apply ``overrides``, validate every fixed section.

    The method's and the strategy's own options are checked by
    :func:`vlda.engine.options.check_options` (``vlda.load_config`` does both)."""
    return build_config(read_raw(path, overrides or ()))
