"""config.Config: typed round trip, type validation of from_dict; one source of defaults (CLI == dataclasses)."""
import dataclasses
from typing import Dict, List, Optional, Tuple

import pytest

from captioning import train
from captioning.config import Config

REQUIRED = "--source s --source-root r --target t --validation-source vs --validation-target vt --output o".split()


@dataclasses.dataclass
class Inner(Config):
    size: int
    rate: float = 0.5


@dataclasses.dataclass
class Outer(Config):
    name: str
    inner: Inner
    shape: Tuple[int, int, int] = (1, 2, 3)
    sizes: List[int] = dataclasses.field(default_factory=list)
    extra: Dict[str, float] = dataclasses.field(default_factory=dict)
    maybe: Optional[Inner] = None
    flag: bool = False


def test_round_trip_and_int_to_float():
    config = Outer(name="x", inner=Inner(size=2), shape=(3, 4, 5), sizes=[1], extra={"a": 1.5}, maybe=Inner(1),
                   flag=True)
    assert Outer.from_dict(config.to_dict()) == config
    assert Outer.from_dict({"name": "x", "inner": {"size": 1, "rate": 2}}).inner.rate == 2.0


@pytest.mark.parametrize("values, message", [
    ({"name": "x", "inner": {"size": "eighty"}}, r"Inner.size: expected int, got 'eighty'"),
    ({"name": "x", "inner": {"size": True}}, r"Inner.size: expected int, got True"),
    ({"name": 3, "inner": {"size": 1}}, r"Outer.name: expected str, got 3"),
    ({"name": "x", "inner": [1]}, r"Outer.inner: expected dict"),
    ({"name": "x", "inner": {"size": 1}, "shape": [1, 2]}, r"Outer.shape: expected 3 values"),
    ({"name": "x", "inner": {"size": 1}, "sizes": "abc"}, r"Outer.sizes: expected list or tuple"),
    ({"name": "x", "inner": {"size": 1}, "flag": "yes"}, r"Outer.flag: expected bool"),
    ({"name": "x", "inner": {"size": 1}, "extra": {"a": "b"}}, r"Outer.extra: expected int or float"),
    ({"name": "x"}, r"Outer lacks inner"),
    ({"name": "x", "inner": {"size": 1}, "bogus": 1}, r"Outer has no field\(s\) bogus"),
])
def test_from_dict_validates_types(values, message):
    with pytest.raises(ValueError, match=message):
        Outer.from_dict(values)


def _assert_defaults(config, skip=()):
    """Every field of ``config`` that has a dataclass default holds that default (nested configs too)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in skip:
            continue
        if isinstance(value, Config):
            _assert_defaults(value, skip)
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            continue
        assert value == default, "%s.%s: the CLI gives %r, the dataclass %r" % (type(config).__name__, f.name,
                                                                               value, default)


@pytest.mark.parametrize("decoder", ["rnn", "transformer", "cnn"])
def test_every_cli_default_equals_its_dataclass_default(decoder):
    """Python users get the network and the training CLI users get (issue 12 item 3)."""
    args = train.build_parser().parse_args(REQUIRED + ["--decoder", decoder])
    # fields the CLI derives from the data or from other flags, not defaults of their own
    derived = {"max_output_length", "format_version", "image_cnn", "feature_shape", "vocab_size", "base_rate",
               "checkpoint_interval", "batch_multiple_of", "output_folder"}
    model_config = train.create_model_config(args, (8, 2, 2), 10, 20)
    _assert_defaults(model_config, derived | ({"decoder"} if decoder != "rnn" else set()))
    _assert_defaults(train.create_training_config(args, 10), derived)
    _assert_defaults(train.create_data_config(args, 1), derived)
    # derived ones agree with what they derive from
    training_config = train.create_training_config(args, 10)
    assert training_config.scheduler.base_rate == training_config.optimizer.learning_rate
    assert training_config.scheduler.checkpoint_interval == training_config.checkpoint_interval
    data_config = train.create_data_config(args, 1)
    assert data_config.max_seq_len == dataclasses.fields(data_config)[4].default == 99
    decoder_config = getattr(model_config, decoder)
    if hasattr(decoder_config, "max_seq_len"):   # the positions the decoder can embed: --max-seq-len's target
        assert decoder_config.max_seq_len == data_config.max_seq_len
