"""`python -m crikpy` is the `crikpy` command."""

from crikpy.cli import main

main()
