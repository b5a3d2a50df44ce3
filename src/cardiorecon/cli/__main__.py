"""`python -m cardiorecon.cli`: the console script."""

from cardiorecon.cli import main

main()
