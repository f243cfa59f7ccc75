"""``python -m callschedule``: the ``callschedule`` command."""

from callschedule.cli import main

if __name__ == "__main__":
    main(prog_name="callschedule")
