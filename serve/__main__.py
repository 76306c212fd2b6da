"""``python -m rayfront`` is the ``rayfront`` command."""

from rayfront.cli import main

main()
