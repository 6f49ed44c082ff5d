"""Logging set-up for the CLIs: the console (stderr). Training adds the model folder's ``log`` file itself once the
folder is its own (records logged before are kept in memory and written there first)."""
import logging
import sys

FORMAT = "[%(asctime)s %(levelname)s %(name)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d:%H:%M:%S"


def setup_main_logger(console: bool = True, level: str = "INFO", prefix: str = "") -> None:
    """Configure the root logger: console on stderr (unless ``console`` is False, as with ``--quiet``: errors only).
    Calling it again replaces the handlers. ``prefix`` (e.g. a worker rank) is put in front of every message."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    formatter = logging.Formatter(prefix + FORMAT, datefmt=DATE_FORMAT)
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        root.addHandler(stream)
    else:  # --quiet: errors still reach the terminal
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        stream.setLevel(logging.ERROR)
        root.addHandler(stream)
    # MXNet and matplotlib are chatty at DEBUG
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    logging.getLogger("PIL").setLevel(logging.WARNING)

