"""Entrypoint for `ray job submit ... -- python jobs/demo.py [--quick]`: the tiny-model demo."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    from raysys.cli import main as cli_main

    sys.argv = ["raysys", "demo", *argv]
    cli_main()


if __name__ == "__main__":
    main(sys.argv[1:])
