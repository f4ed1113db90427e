"""``python -m innsight``: the command line (see :mod:`innsight.cli`)."""

from innsight.cli import main

if __name__ == "__main__":  # importing the module (as API doc tools do) runs nothing
    main()
