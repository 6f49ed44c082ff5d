"""`Config`: the base of every typed configuration.

Configs are small dataclasses. They turn into plain dicts (and YAML, loaded with ``safe_load``) and back, nested
configs included, so that a model folder's ``config`` file rebuilds exactly the network that wrote it.
"""
import dataclasses
import typing
from typing import Any, Dict, Type, TypeVar

import yaml

from . import utils

C = TypeVar("C", bound="Config")


@dataclasses.dataclass
class Config:
    """Base class: subclass with ``@dataclass`` and plain typed fields (ints, floats, strs, bools, tuples,
    lists, dicts, other Configs, or ``Optional`` of those)."""

    def to_dict(self) -> Dict[str, Any]:
        """A dict of plain YAML-safe values (tuples become lists, nested configs dicts)."""
        return {f.name: _to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: Type[C], values: Dict[str, Any]) -> C:
        """Rebuild a config from ``to_dict`` output. Unknown keys are an error; missing keys take defaults."""
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError("%s has no field(s) %s" % (cls.__name__, ", ".join(sorted(unknown))))
        kwargs = {name: _from_plain(hints[name], value) for name, value in values.items()}
        return cls(**kwargs)

    def copy(self: C, **changes: Any) -> C:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)

    def save(self, path: str) -> None:
        """Write as YAML, atomically."""
        with utils.atomic_open(path, "w") as f:
            yaml.safe_dump(self.to_dict(), f, default_flow_style=False, sort_keys=False)

    @classmethod
    def load(cls: Type[C], path: str) -> C:
        """Read a config written by `save`."""
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f)
        if not isinstance(values, dict):
            raise ValueError("%s: not a %s (expected a YAML mapping)" % (path, cls.__name__))
        return cls.from_dict(values)


def _to_plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def _from_plain(hint: Any, value: Any) -> Any:
    """Convert a plain value back to the type the field's annotation names."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        inner = [a for a in args if a is not type(None)]
        return _from_plain(inner[0], value) if len(inner) == 1 else value
    if isinstance(hint, type) and issubclass(hint, Config):
        return hint.from_dict(value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_plain(args[0], v) for v in value)
        if args:
            return tuple(_from_plain(a, v) for a, v in zip(args, value))
        return tuple(value)
    if origin is list:
        return [_from_plain(args[0], v) for v in value] if args else list(value)
    if origin is dict:
        return {k: _from_plain(args[1], v) for k, v in value.items()} if args else dict(value)
    if hint is float and isinstance(value, int):
        return float(value)
    return value
