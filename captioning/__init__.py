"""captioning: image captioning as neural machine translation on MXNet.

A re-implementation of the image-captioning module of Sockeye 1.x (Bazzani, Domhan, Hieber 2018).
"""
import os

__version__ = "0.1.0"


def _use_every_core() -> None:
    """MXNet reads OMP_NUM_THREADS once, when it is first imported, and runs a single OpenMP thread on
    small machines unless told otherwise. Every module of this package imports MXNet after this package's
    ``__init__``, so this is the one place that can give it every core the process may use. A value the user
    set is left alone."""
    if "OMP_NUM_THREADS" not in os.environ:
        from .utils import num_cpus   # utils does not import MXNet
        os.environ["OMP_NUM_THREADS"] = str(max(1, num_cpus()))


_use_every_core()
