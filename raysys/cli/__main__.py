"""`python -m raysys.cli` is `raysys`."""

from raysys.cli import main

if __name__ == "__main__":
    main()
