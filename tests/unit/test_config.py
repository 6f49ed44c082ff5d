"""config.Config: typed round trip, type validation of from_dict; one source of defaults: every CLI option that sets
a config field takes that field's default object (`arguments.field_default`), for train, captioner and
extract_features."""
import dataclasses
from typing import Dict, List, Optional, Tuple

import pytest

from captioning import arguments, captioner, extract_features, train
from captioning.config import Config

TRAIN_REQUIRED = "--source s --source-root r --target t --validation-source vs --validation-target vt --output o".split()
CAPTIONER_REQUIRED = ["--models", "m"]
EXTRACT_REQUIRED = "--image-root i --input l --output-root r --output o --image-encoder-model-path p".split()


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


class _FreshInt(int):
    pass


class _FreshFloat(float):
    pass


class _FreshStr(str):
    pass


def _fresh(value):
    """An object equal to ``value`` that is no other object (bools and None are singletons: returned as they are)."""
    if isinstance(value, bool) or value is None:
        return value
    for base, fresh in ((int, _FreshInt), (float, _FreshFloat), (str, _FreshStr)):
        if isinstance(value, base):
            return fresh(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_fresh(v) for v in value)
    return type(value)(value)


def _same_objects(a, b):
    """``a`` holds the very objects ``b`` holds (a tuple or list rebuilt around them counts: the CLI turns lists of
    values into tuples); bools and None by value, and strings too (argparse passes a string default through the
    option's ``type``: an equal string comes out)."""
    if isinstance(b, (tuple, list)):
        return isinstance(a, (tuple, list)) and len(a) == len(b) and all(map(_same_objects, a, b))
    if isinstance(b, (bool, str)) or b is None:
        return a == b
    return a is b


@pytest.fixture
def handed_out(monkeypatch):
    """`arguments.field_default` handing out a fresh object per option and recording, per (config class, field),
    the object it gave: a config field that holds that object got it from the option's default."""
    record = {}
    real = arguments.field_default

    def recording(config_class, name, *also):
        value = _fresh(real(config_class, name, *also))
        for key in ((config_class, name),) + also:
            record[key] = value
        return value
    monkeypatch.setattr(arguments, "field_default", recording)
    return record


def _assert_from_field_defaults(config, handed_out, derived):
    """Every field of ``config`` (nested configs too) that has a default, and is not ``derived`` from the data or
    other flags, holds the object `arguments.field_default` handed to its option."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, Config):
            _assert_from_field_defaults(value, handed_out, derived)
            continue
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if not has_default or f.name in derived.get(type(config).__name__, ()):
            continue
        key = (type(config), f.name)
        assert key in handed_out, "%s.%s: no option reads this field's default" % (key[0].__name__, key[1])
        assert _same_objects(value, handed_out[key]), "%s.%s: the CLI gives %r, not the field's default %r" \
            % (type(config).__name__, f.name, value, handed_out[key])


# fields the CLIs derive from the data, from other flags or from nothing (Python-only settings)
TRAIN_DERIVED = {"ModelConfig": {"max_output_length", "format_version", "image_cnn", "rnn", "transformer", "cnn",
                                 "fine_tune"},    # fine_tune: --image-encoder-fine-tune-from (None: without)
                 "DataConfig": {"batch_multiple_of"},
                 "TrainingConfig": {"log_interval"},              # no flag: a Python-only setting
                 "OptimizerConfig": {"params"},                   # --optimizer-params (None: no extra parameters)
                 "SchedulerConfig": {"schedule"}}                 # --learning-rate-schedule (None: no steps)


@pytest.mark.parametrize("decoder", ["rnn", "transformer", "cnn"])
def test_train_options_take_their_field_defaults(handed_out, decoder):
    """What a Python user of the configs gets is what the training CLI gets, from one written default."""
    chosen = decoder != "rnn"     # --decoder's default is rnn: the others are chosen on the command line
    args = train.build_parser().parse_args(TRAIN_REQUIRED + (["--decoder", decoder] if chosen else []))
    assert args.decoder == decoder
    derived = dict(TRAIN_DERIVED, ModelConfig=TRAIN_DERIVED["ModelConfig"] | ({"decoder"} if chosen else set()))
    model_config = train.create_model_config(args, (8, 2, 2), 10, 20)
    for config in (model_config, train.create_training_config(args, 10), train.create_data_config(args, 1)):
        _assert_from_field_defaults(config, derived=derived, handed_out=handed_out)
    assert getattr(model_config, decoder) is not None


def test_captioner_options_take_their_field_defaults(handed_out):
    args = captioner_args(CAPTIONER_REQUIRED)
    _assert_from_field_defaults(captioner.captioner_config(args), handed_out, {})


def test_extract_features_options_take_their_field_defaults(handed_out):
    args = extract_features.build_parser().parse_args(EXTRACT_REQUIRED)
    config = extract_features.config_from_args(args)
    _assert_from_field_defaults(config, handed_out, {"ExtractionConfig": {"progress", "copy_cnn"}})


def captioner_args(argv):
    from captioning.inference import CaptionerConfig
    parser = arguments.ConfigArgumentParser()
    arguments.add_captioner_args(parser, CaptionerConfig)
    return parser.parse_args(argv)


def test_a_changed_field_default_is_the_cli_default(monkeypatch):
    """The dataclass is the one place to change a default: the CLI follows; an option that sets two fields refuses
    defaults that disagree."""
    from captioning.inference import CaptionerConfig
    from captioning.training import TrainingConfig
    monkeypatch.setattr(CaptionerConfig.__dataclass_fields__["beam_size"], "default", 7)
    assert captioner_args(CAPTIONER_REQUIRED).beam_size == 7
    monkeypatch.setattr(TrainingConfig.__dataclass_fields__["checkpoint_interval"], "default", 1234)
    with pytest.raises(ValueError, match="TrainingConfig.checkpoint_interval and SchedulerConfig.checkpoint_interval"):
        train.build_parser()


def test_field_default_reads_defaults_and_factories():
    assert arguments.field_default(Outer, "shape") == (1, 2, 3)
    assert arguments.field_default(Outer, "sizes") == [] and arguments.field_default(Outer, "maybe") is None
    with pytest.raises(ValueError, match="Outer.name has no default"):
        arguments.field_default(Outer, "name")
    with pytest.raises(ValueError, match="Outer has no field 'bogus'"):
        arguments.field_default(Outer, "bogus")
    with pytest.raises(ValueError, match="Inner.rate and Outer.flag are set by one option"):
        arguments.field_default(Inner, "rate", (Outer, "flag"))
