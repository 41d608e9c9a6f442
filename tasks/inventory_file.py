"""Reading the inventory file: a safe YAML loader, and validation errors as one line.

``NoAliasLoader`` parses the file with PyYAML's safe loader, refusing duplicate keys
and anchors/aliases. ``format_error`` turns pydantic's first validation error into
one line naming the file, the key path and what is expected (with the allowed keys
when a key is unknown). ``Strict`` is the models' base. ``tasks.inventory`` holds
the model and ``load()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    """The inventory's models: unknown keys refused, no type coercion, immutable."""

    # python-re: the data_dir pattern needs a look-ahead, which the default engine lacks.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, regex_engine="python-re")


def base_url(value: str, what: str, no_login: str, whole: str) -> str:
    """``scheme://host[:port]`` of an http(s) URL of ``what``, or ValueError: ``no_login``
    for one with a login in it, and one with a path (``whole`` says why not)."""
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        url = None
    if not url or url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL of {what}")
    if url.username or url.password:
        raise ValueError(no_login)
    if url.path.strip("/") or url.query or url.fragment:
        raise ValueError(f"{value!r}: give only scheme, host and port ({whole})")
    return f"{url.scheme}://{url.netloc}"


class _Loader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys and anchors/aliases."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen[key] = loader.construct_object(value_node, deep=True)
    return seen


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class NoAliasLoader(_Loader):
    """Also refuses anchors and aliases: no "billion laughs" through validation."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                "YAML anchors and aliases are not allowed in the inventory",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def _describe(error: dict[str, Any]) -> str:
    kind = error["type"]
    given = error.get("input")
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind in ("int_type", "int_parsing"):
        return f"expected an integer, got {given!r}"
    if kind in ("string_type",):
        return f"expected a string, got {given!r}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {given!r}"
    if kind in ("list_type",):
        return f"expected a list, got {given!r}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping of keys, got {given!r}"
    if kind == "literal_error":
        return f"expected one of {error['ctx']['expected']}, got {given!r}"
    if kind in ("greater_than_equal", "less_than_equal"):
        return f"{error['msg'][0].lower()}{error['msg'][1:]}, got {given!r}"
    if kind == "string_pattern_mismatch":
        return (
            f"expected an absolute path at least two folders deep (e.g. /var/lib/regkit/registry), "
            f"of letters, digits, '.', '_' and '-', without '.' or '..' parts, got {given!r}"
        )
    return f"{error['msg']}, got {given!r}"


def _allowed_keys(root: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """ "; allowed keys: ..." for the mapping that holds the unknown key at ``loc``."""
    model: Any = root
    parts = list(loc[:-1])
    while parts:
        part = parts.pop(0)
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]  # a mapping of models (hosts)
            parts = parts[1:]  # skip its key (the alias)
        if not hasattr(annotation, "model_fields"):
            return ""
        model = annotation
    # ``source`` is set by load(), never written in the file.
    names = [n for n in model.model_fields if n != "source"]
    return "; allowed keys: " + ", ".join(names)


def format_error(path: Path, exc: ValidationError, root: type[BaseModel]) -> str:
    """The first error of validating the file at ``path`` against ``root``, as one line."""
    errors = exc.errors()
    first = errors[0]
    loc = tuple(first["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    message = f"{path}: {key}: {_describe(first)}"
    if first["type"] == "extra_forbidden":
        message += _allowed_keys(root, loc)
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return message
