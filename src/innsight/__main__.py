"""``python -m innsight``: the command line (see :mod:`innsight.cli`)."""

from innsight.cli import main

main()
