"""Entrypoint for `ray job submit`: runs a recipe config on the cluster the job lands on.

    ray job submit --address http://127.0.0.1:8265 --working-dir . \
        --runtime-env cluster/runtime_env.yaml -- python jobs/run.py configs/w2s_gsm8k.yaml

Inside a job, RAY_ADDRESS is set, so the driver joins that cluster instead of starting one.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    from raysys.cli import main as cli_main

    sys.argv = ["raysys", "run", *argv]
    cli_main()


if __name__ == "__main__":  # vLLM spawns worker processes: the guard keeps them from re-running us
    main(sys.argv[1:])
