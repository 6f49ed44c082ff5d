"""``python -m captioning.synthetic``."""
from .cli import main

main()
