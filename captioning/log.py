"""Logging set-up for the CLIs: the console (stderr) and, for training, the model folder's ``log`` file."""
import logging
import sys
from typing import Optional

FORMAT = "[%(asctime)s %(levelname)s %(name)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d:%H:%M:%S"


def setup_main_logger(console: bool = True, path: Optional[str] = None, level: str = "INFO",
                      prefix: str = "") -> None:
    """Configure the root logger: console on stderr (unless ``console`` is False, as with ``--quiet``) and a
    file at ``path`` (appended to, so a resumed run continues its log). Calling it again replaces the handlers.
    ``prefix`` (e.g. a worker rank) is put in front of every message."""
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
    if path is not None:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(formatter)
        root.addHandler(handler)
    # MXNet and matplotlib are chatty at DEBUG
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    logging.getLogger("PIL").setLevel(logging.WARNING)

