"""The ``raysys`` command line. Subcommands import lazily so ``raysys grade`` never pays for
torch, Ray or vLLM imports."""

from __future__ import annotations

import importlib
import sys

import click

# name -> "module:attribute" of a click command/group, imported on first use.
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("raysys.cli.config_cmd:config", "Show and validate configs."),
    "grade": ("raysys.cli.grade:grade", "Grade predictions against gold answers."),
    "data": ("raysys.cli.data:data", "Prepare and inspect datasets."),
    "models": ("raysys.cli.models:models", "Build tiny models; inspect model dirs."),
    "sample": ("raysys.cli.sample:sample", "Sample completions for a dataset (Ray Data)."),
    "eval": ("raysys.cli.sample:eval_cmd", "Evaluate a model: accuracy, maj@k, pass@k."),
    "train": ("raysys.cli.train:train", "Fine-tune on Ray Train (DeepSpeed + PEFT)."),
    "run": ("raysys.cli.run:run", "Run a recipe config end to end (resumable)."),
    "status": ("raysys.cli.run:status", "Show the stages of a run directory."),
    "report": ("raysys.cli.report:report", "Regenerate a run's report.md and figures."),
    "compare": ("raysys.cli.compare:compare", "Compare reruns of one recipe (seeds)."),
    "demo": ("raysys.cli.run:demo", "Run a method's demo (or all three) on tiny models."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        target, _ = COMMANDS[name]
        mod_name, attr = target.split(":")
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name == mod_name:
                return None   # command not built yet in this checkout
            raise
        return getattr(mod, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, h) for n, (t, h) in sorted(COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="raysys")
def cli() -> None:
    """raysys: distributed sampling and training of LLM math reasoners on Ray."""


def one_line(message: str) -> str:
    """A message as one line: a user error is one line on stderr, however it was built."""
    return " ".join(str(message).split())


def usage_line(e: click.UsageError) -> str:
    """A click usage error (bad flag value, missing argument) as ``<flag>: <what> (help)``."""
    if isinstance(e, click.BadParameter) and e.param is not None:
        name = e.param_hint or (e.param.opts[0] if getattr(e.param, "opts", None) else e.param.name)
        if isinstance(name, (list, tuple)):
            name = " / ".join(name)
        what = f"{name}: {e.message}"
    else:
        what = e.format_message()
    cmd = e.ctx.command_path if e.ctx is not None else "raysys"
    return one_line(f"{what} (see '{cmd} --help')")


def main() -> None:
    """Console entry point: user-facing errors print one line (``error: <where>: <what>``) and
    exit 2, not a traceback. ``RAYSYS_TRACEBACK=1`` re-raises them (debugging)."""
    import os

    from raysys.errors import USER_ERRORS

    try:
        cli.main(prog_name="raysys", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.UsageError as e:
        click.echo(f"error: {usage_line(e)}", err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"error: {one_line(e.format_message())}", err=True)
        sys.exit(e.exit_code if e.exit_code != 1 else 2)
    except USER_ERRORS as e:
        if os.environ.get("RAYSYS_TRACEBACK"):
            raise
        click.echo(f"error: {one_line(str(e))}", err=True)
        sys.exit(2)
    except OSError as e:
        # A file the command could not read or write (a path under a regular file, a full
        # disk): name it in one line. An OSError without a file is a bug: keep its traceback.
        if e.filename is None or os.environ.get("RAYSYS_TRACEBACK"):
            raise
        click.echo(f"error: {e.filename}: {e.strerror or type(e).__name__}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
