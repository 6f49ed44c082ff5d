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
        """Rebuild a config from ``to_dict`` output. Unknown keys, missing required keys and values of the wrong
        type (checked against the field annotations) are a ``ValueError`` naming the key."""
        if not isinstance(values, dict):
            raise ValueError("%s: expected a mapping, got %r" % (cls.__name__, values))
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        unknown = set(values) - {f.name for f in fields}
        if unknown:
            raise ValueError("%s has no field(s) %s" % (cls.__name__, ", ".join(sorted(map(str, unknown)))))
        missing = [f.name for f in fields if f.name not in values and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError("%s lacks %s" % (cls.__name__, ", ".join(missing)))
        kwargs = {name: _from_plain(hints[name], value, "%s.%s" % (cls.__name__, name))
                  for name, value in values.items()}
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


def _from_plain(hint: Any, value: Any, where: str) -> Any:
    """Convert a plain value back to the type the field's annotation names; ``ValueError`` naming ``where`` if it
    is not of that type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _from_plain(inner[0], value, where) if len(inner) == 1 else value
    if hint is Any:
        return value
    if isinstance(hint, type) and issubclass(hint, Config):
        return hint.from_dict(_expect(value, dict, where))
    if origin is tuple:
        items = _expect(value, (list, tuple), where)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_plain(args[0], v, where) for v in items)
        if args:
            if len(items) != len(args):
                raise ValueError("%s: expected %d values, got %r" % (where, len(args), value))
            return tuple(_from_plain(a, v, where) for a, v in zip(args, items))
        return tuple(items)
    if origin is list:
        items = _expect(value, (list, tuple), where)
        return [_from_plain(args[0], v, where) for v in items] if args else list(items)
    if origin is dict:
        mapping = _expect(value, dict, where)
        return {k: _from_plain(args[1], v, where) for k, v in mapping.items()} if args else dict(mapping)
    if hint is float:
        return float(_expect(value, (int, float), where))
    if hint in (int, str, bool):
        return _expect(value, hint, where)
    return value


def _expect(value: Any, types: Any, where: str) -> Any:
    """``value`` if it is an instance of ``types`` (a bool is not a number here), else ``ValueError``."""
    wanted = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in wanted:
        ok = False
    else:
        ok = isinstance(value, wanted)
    if not ok:
        names = " or ".join(t.__name__ for t in wanted)
        raise ValueError("%s: expected %s, got %r" % (where, names, value))
    return value
