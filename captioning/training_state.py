"""`TrainingStateStore`: the model folder's ``training_state/``, what an interrupted run resumes from.

The folder holds ``params`` (the model's parameters, MXNet's NDArray format), ``state.json`` (counters, the learning-
rate schedule, the data iterator, NumPy's and Python's generator states, the metric lines) and the optimizer states
as ``optimizer_states.npz`` (arrays) + ``optimizer_states.json`` (their layout and the optimizer's scalars such as
the update counts); ``optimizer_states.initial.*`` / ``.best.*`` for ``--learning-rate-decay-optimizer-states-reset``.
Nothing is unpickled: arrays are read with ``np.load(allow_pickle=False)``, the rest is JSON. MXNet's own
``Trainer.save_states`` pickles (it would run code from a crafted folder), so a folder holding such a file
(``optimizer_states``, written by older versions) is refused.

Writing is atomic: a new folder under a temporary name, swapped in by two renames; `recover` puts the complete
old folder back if a run was killed between them.
"""
import glob
import json
import logging
import math
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, List, Optional, Tuple

import mxnet as mx
import numpy as np
from mxnet import gluon

from . import constants as C
from . import utils
from .model_folder import save_file

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATE_PARAMS = "params"
OPTIMIZER = "optimizer_states"
OPTIMIZER_INITIAL = "optimizer_states.initial"
OPTIMIZER_BEST = "optimizer_states.best"
LEGACY_PICKLE = "optimizer_states"        # MXNet's pickled Trainer states (older versions): refused

# optimizer attributes that are set up by the Trainer (or objects), not training progress
_OPTIMIZER_SKIP = {"param_dict", "idx2name", "lr_scheduler", "sym_info", "param_idx2name", "_index_update_count",
                   "_all_index_update_counts", "rescale_grad"}

# the optimizer's state in plain data: arrays by name, and JSON-able metadata (layout + scalars)
OptimizerSnapshot = Tuple[Dict[str, np.ndarray], Dict[str, Any]]


@dataclass
class TrainingState:
    """Counters and early-stopping state (saved as JSON in training_state/state.json)."""
    updates: int = 0
    samples: int = 0
    checkpoint: int = 0
    epoch: int = 0
    seconds: float = 0.0                        # training time before the current session
    best_metric: Optional[float] = None
    best_checkpoint: int = 0
    num_not_improved: int = 0
    finished: bool = False
    stop_reason: str = ""

    @classmethod
    def from_json(cls, values: Any, where: str) -> "TrainingState":
        """Checked: every field present with its type (a one-line error naming ``where`` otherwise)."""
        utils.check_condition(isinstance(values, dict), "%s: 'training' is not a mapping" % where)
        number, counter = (int, float, type(None)), (int,)
        allowed = {"seconds": number, "best_metric": number, "finished": (bool,), "stop_reason": (str,)}
        kwargs: Dict[str, Any] = {}
        for f in fields(cls):
            value = values.get(f.name) if isinstance(values, dict) else None
            ok = f.name in values and isinstance(value, allowed.get(f.name, counter)) and \
                (f.name == "finished" or not isinstance(value, bool)) and (f.name != "seconds" or value is not None)
            utils.check_condition(ok, "%s: damaged training state ('training'.%s is %r); start afresh with "
                                      "--overwrite-output" % (where, f.name, value))
            kwargs[f.name] = value
        return cls(**kwargs)


# -------------------------------------------------------------------------------------------------------------
# optimizer states without pickle
# -------------------------------------------------------------------------------------------------------------

def _updaters(trainer: gluon.Trainer) -> List[Any]:
    if not trainer._kv_initialized:     # the updaters exist once the Trainer has set up its kvstore
        trainer._init_kvstore()
    return list(trainer._updaters)


def get_optimizer_states(trainer: gluon.Trainer) -> OptimizerSnapshot:
    """The optimizer states of a `gluon.Trainer` that updates locally (not on a dist_async kvstore) as plain
    arrays and JSON: each parameter's state (``None``, an array or a tuple of them, as ``create_state`` made it)
    and the optimizer's update counts and scalar attributes."""
    updater = _updaters(trainer)[0]
    arrays: Dict[str, np.ndarray] = {}

    def layout(state: Any, key: str) -> Any:
        if state is None:
            return None
        if isinstance(state, mx.nd.NDArray):
            arrays[key] = state.asnumpy()
            return key
        utils.check_condition(isinstance(state, (tuple, list)), "optimizer state of type %s cannot be saved"
                              % type(state).__name__)
        return [layout(s, "%s_%d" % (key, k)) for k, s in enumerate(state)]

    states = {str(index): layout(state, "p%s" % index) for index, state in updater.states.items()}
    optimizer = trainer._optimizer
    scalars = {name: value for name, value in vars(optimizer).items()
               if name not in _OPTIMIZER_SKIP and isinstance(value, (bool, int, float, str)) and
               not (isinstance(value, float) and not math.isfinite(value))}
    counts = {str(device): {str(k): int(v) for k, v in table.items()}
              for device, table in optimizer._all_index_update_counts.items()}
    meta = {"optimizer": type(optimizer).__name__.lower(), "states": states, "scalars": scalars,
            "index_update_counts": counts}
    return arrays, meta


def set_optimizer_states(trainer: gluon.Trainer, snapshot: OptimizerSnapshot, where: str) -> None:
    """Restore `get_optimizer_states` output into every device's updater (a one-line error naming ``where`` for
    states that do not fit the optimizer or the model)."""
    arrays, meta = snapshot
    optimizer = trainer._optimizer
    try:
        utils.check_condition(meta["optimizer"] == type(optimizer).__name__.lower(),
                              "%s: states of the %s optimizer, not of %s" % (where, meta["optimizer"],
                                                                            type(optimizer).__name__.lower()))
        for updater, ctx in zip(_updaters(trainer), trainer._contexts):
            def build(spec: Any, ctx: Any = ctx) -> Any:
                if spec is None:
                    return None
                if isinstance(spec, str):
                    return mx.nd.array(arrays[spec], ctx=ctx, dtype=arrays[spec].dtype)
                return tuple(build(s) for s in spec)
            updater.states = {int(index): build(spec) for index, spec in meta["states"].items()}
            updater.states_synced = dict.fromkeys(updater.states, True)
        for name, value in meta["scalars"].items():
            if name in vars(optimizer) and type(vars(optimizer)[name]) is type(value):
                setattr(optimizer, name, value)
        optimizer._all_index_update_counts = {int(device): {int(k): int(v) for k, v in table.items()}
                                              for device, table in meta["index_update_counts"].items()}
        optimizer._index_update_count = optimizer._all_index_update_counts.setdefault(0, {})
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise utils.CaptioningError("%s: malformed optimizer states (%s: %s); start afresh with --overwrite-output"
                                    % (where, type(e).__name__, e)) from None
    num_params = len(trainer._params)
    utils.check_condition(all(0 <= int(i) < num_params for i in meta["states"]),
                          "%s: optimizer states for parameters the model does not have" % where)


def save_optimizer_states(snapshot: OptimizerSnapshot, folder: str, stem: str) -> None:
    """``stem.npz`` (arrays) and ``stem.json`` (layout and scalars) in ``folder``."""
    arrays, meta = snapshot
    np.savez(os.path.join(folder, stem + ".npz"), **arrays)
    with open(os.path.join(folder, stem + ".json"), "w", encoding="utf-8") as f:
        json.dump(meta, f)


def load_optimizer_states(folder: str, stem: str) -> Optional[OptimizerSnapshot]:
    """What `save_optimizer_states` wrote, or None if ``stem.json`` is absent. Only plain arrays are read (no
    pickle); anything else is a one-line error."""
    meta_path = os.path.join(folder, stem + ".json")
    if not os.path.exists(meta_path):
        return None
    meta = read_json(meta_path)
    utils.check_condition(isinstance(meta, dict) and isinstance(meta.get("states"), dict),
                          "%s: not optimizer states (expected a mapping with 'states')" % meta_path)
    path = os.path.join(folder, stem + ".npz")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError) as e:
        raise utils.CaptioningError("%s: cannot read the optimizer states (%s); only plain arrays are accepted"
                                    % (path, str(e).splitlines()[0] if str(e) else type(e).__name__)) from None
    return arrays, meta


def read_json(path: str) -> Any:
    """A JSON file's value, or a one-line error naming the file and the cause."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise utils.CaptioningError("%s: cannot read (%s); the training state is damaged: start afresh with "
                                    "--overwrite-output" % (path, str(e).splitlines()[0] if str(e) else
                                                            type(e).__name__)) from None


# -------------------------------------------------------------------------------------------------------------
# generator states as JSON
# -------------------------------------------------------------------------------------------------------------

def rng_states() -> Dict[str, Any]:
    """NumPy's and Python's global generator states, as JSON-able lists."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"numpy_rng": [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
            "python_rng": [version, list(internal), gauss]}


def set_rng_states(state: Dict[str, Any]) -> None:
    numpy_state = state["numpy_rng"]
    np.random.set_state((numpy_state[0], np.array(numpy_state[1], dtype=np.uint32), numpy_state[2],
                         numpy_state[3], numpy_state[4]))
    python_state = state["python_rng"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))


# -------------------------------------------------------------------------------------------------------------
# the store
# -------------------------------------------------------------------------------------------------------------

@dataclass
class SavedState:
    """What `TrainingStateStore.load` returns: the JSON part and the optimizer snapshots (None where absent)."""
    training: TrainingState
    values: Dict[str, Any]                 # scheduler, iterator, rng states, metrics
    params_path: str
    optimizer: Optional[OptimizerSnapshot]
    optimizer_initial: Optional[OptimizerSnapshot]
    optimizer_best: Optional[OptimizerSnapshot]
    where: str = STATE_FILE

    def restore(self, scheduler: Any, iterator: Any) -> None:
        """Put the schedule's, the data iterator's and the generators' states back (a one-line error if they do
        not fit)."""
        try:
            scheduler.load_state_dict(self.values["scheduler"])
            iterator.load_state_dict(self.values["iterator"])
            set_rng_states(self.values)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise utils.CaptioningError("%s: damaged training state (%s: %s); start afresh with --overwrite-output"
                                        % (self.where, type(e).__name__, e)) from None


class TrainingStateStore:
    """Save and load ``<model folder>/training_state``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.directory = os.path.join(folder, C.TRAINING_STATE_DIRNAME)

    def recover(self) -> None:
        """If a run was killed while swapping training_state folders, put the complete old one back; remove
        temporary folders."""
        old = self.directory + ".old"
        if not os.path.exists(self.directory) and os.path.isdir(old):
            os.rename(old, self.directory)
        for tmp in glob.glob(os.path.join(self.folder, C.TRAINING_STATE_DIRNAME + ".tmp-*")):
            shutil.rmtree(tmp, ignore_errors=True)

    def exists(self) -> bool:
        return os.path.isfile(os.path.join(self.directory, STATE_FILE))

    def save(self, save_params: Callable[[str], None], values: Dict[str, Any],
             snapshots: Dict[str, Optional[OptimizerSnapshot]]) -> None:
        """Write a new training_state/ atomically: ``save_params(path)`` writes the parameters, ``values`` go to
        state.json, ``snapshots`` (stem -> snapshot or None) to .npz/.json pairs."""
        try:
            tmp = tempfile.mkdtemp(prefix=C.TRAINING_STATE_DIRNAME + ".tmp-", dir=self.folder)
        except OSError as e:
            raise utils.write_error(self.directory, e) from None
        try:
            save_file(save_params, os.path.join(tmp, STATE_PARAMS), self.directory)
            for stem, snapshot in snapshots.items():
                if snapshot is not None:
                    save_optimizer_states(snapshot, tmp, stem)
            with open(os.path.join(tmp, STATE_FILE), "w", encoding="utf-8") as f:
                json.dump(values, f)
                f.flush()
                os.fsync(f.fileno())
            old = None
            if os.path.exists(self.directory):
                old = self.directory + ".old"
                if os.path.exists(old):
                    shutil.rmtree(old)
                os.rename(self.directory, old)
            os.rename(tmp, self.directory)
            if old:
                shutil.rmtree(old)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError) and e.errno in utils.WRITE_ERRNOS:
                raise utils.CaptioningError("%s: cannot write the training state (%s)"
                                            % (self.directory, e.strerror or e)) from None
            raise

    def load(self) -> SavedState:
        """Read training_state/ (one-line errors for anything damaged, and for pickled optimizer states)."""
        path = os.path.join(self.directory, STATE_FILE)
        values = read_json(path)
        utils.check_condition(isinstance(values, dict), "%s: not a training state (expected a JSON mapping); start "
                                                        "afresh with --overwrite-output" % path)
        for key in ("training", "scheduler", "iterator", "numpy_rng", "python_rng", "metrics"):
            utils.check_condition(key in values, "%s: damaged training state (no %r); start afresh with "
                                                 "--overwrite-output" % (path, key))
        training = TrainingState.from_json(values["training"], path)
        utils.check_condition(isinstance(values["metrics"], list) and all(isinstance(m, str)
                                                                          for m in values["metrics"]),
                              "%s: damaged training state ('metrics' is not a list of lines)" % path)
        legacy = os.path.join(self.directory, LEGACY_PICKLE)
        utils.check_condition(not os.path.exists(legacy),
                              "%s: optimizer states in MXNet's pickle format are not loaded (unpickling can run "
                              "code); this folder was written by an older version or tampered with: start afresh "
                              "with --overwrite-output" % legacy)
        return SavedState(training, values, os.path.join(self.directory, STATE_PARAMS),
                          load_optimizer_states(self.directory, OPTIMIZER),
                          load_optimizer_states(self.directory, OPTIMIZER_INITIAL),
                          load_optimizer_states(self.directory, OPTIMIZER_BEST), where=path)
