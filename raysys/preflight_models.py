"""What the models' shapes and the engine's rules allow, checked before any work.

A run whose parallelism, LoRA targets, lengths or sampling the models or the engine can never
honour is refused here with one ``ConfigError`` naming the config key, instead of failing in a
replica or a training stage after Ray started and earlier stages ran:

- ``engine.tensor_parallel_size`` must split every served model's attention heads and key/value
  heads evenly (vLLM's rule);
- every LoRA target module must be a linear module of a model the config names;
- a training ``max_len`` may not exceed the models' positions;
- ``max_new_tokens`` must leave room for a prompt in the models' context;
- a vLLM engine samples at temperature <= 2 and serves LoRA ranks up to ``max_lora_rank``.

The shapes come from each model dir's config.json and safetensors headers (no weights, no
transformers); a ``tiny`` model (built by the recipe) is a Llama of known module names and
positions. A hub id's shape is unknown here: a check that needs it is skipped, never guessed.
Where a config names several models, a check refuses only what no model of it allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raysys.config import ConfigError, EngineConfig, ModelSpec, SamplingConfig, find_sections

# The linear modules of a tiny model (raysys.models.tiny builds a Llama): what LoRA can target.
LLAMA_LINEAR = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                          "down_proj", "lm_head"})
# Weight names of embeddings: 2-D like a linear layer's, but not targetable as one.
_EMBEDDINGS = frozenset({"embed_tokens", "wte", "wpe", "word_embeddings", "embed_in",
                         "embed_positions", "position_embeddings", "token_type_embeddings"})
# LoRA ranks vLLM can serve (vllm.config.lora.MaxLoRARanks, vLLM 0.32).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
VLLM_MAX_TEMPERATURE = 2.0
# Engine kinds that serve with vLLM (``auto`` does on a GPU node with vLLM installed).
VLLM_KINDS = ("vllm", "auto")


@dataclass(frozen=True)
class ModelShape:
    """What a config's model allows, as far as its files tell (None: unknown)."""

    key: str                            # its config key (``models.strong.path``)
    context: int                        # tokens a sequence may hold: max_model_len, positions
    heads: int | None = None
    kv_heads: int | None = None
    positions: int | None = None        # config.json max_position_embeddings
    linear: frozenset[str] | None = None    # leaf names of its linear modules


def linear_names(tensors: dict[str, tuple[str, list[int], str]]) -> frozenset[str]:
    """Leaf module names of the 2-D weights in a safetensors header (name -> (dtype, shape,
    file)), embeddings left out, ``lm_head`` always in (a tied head is not stored). A superset
    of the model's ``nn.Linear`` leaves, so nothing the trainer accepts is refused. Pure."""
    out = {"lm_head"}
    for name, (_, shape, _) in tensors.items():
        parts = name.split(".")
        if len(shape) == 2 and len(parts) >= 2 and parts[-1] == "weight" \
                and parts[-2] not in _EMBEDDINGS:
            out.add(parts[-2])
    return frozenset(out)


def _positive(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def shape_of_dir(d: Path, key: str, max_model_len: int) -> ModelShape:
    """The shape of the local model dir ``d`` (an adapter dir: its local base), from its
    config.json and safetensors headers. Raises ModelError for a dir that cannot be read (the
    preflight checked every model dir first)."""
    from raysys.data.io import read_json_object
    from raysys.errors import ModelError
    from raysys.models.model_dir import _looks_local, adapter_base, is_adapter_dir
    from raysys.models.usable import _is_composite, _tensors

    if is_adapter_dir(d):
        base = adapter_base(d)
        if not _looks_local(base) or is_adapter_dir(base):
            return ModelShape(key, max_model_len)
        d = Path(base).expanduser()
    cfg = read_json_object(d / "config.json", ModelError)
    if _is_composite(cfg):
        return ModelShape(key, max_model_len)
    heads, positions = _positive(cfg.get("num_attention_heads")), \
        _positive(cfg.get("max_position_embeddings"))
    return ModelShape(key, min(max_model_len, positions or max_model_len), heads,
                      _positive(cfg.get("num_key_value_heads")) or heads, positions,
                      linear_names(_tensors(d)))


def model_shapes(cfg: Any) -> list[ModelShape]:
    """The shape of every model ``cfg`` names: each ``ModelSpec`` (a local dir, ``tiny``, or a
    hub id whose shape is unknown) and a TrainConfig's local ``model`` dir."""
    from raysys.models.tiny import TINY_POSITIONS
    from raysys.training.config import TrainConfig

    shapes = []
    for key, spec in find_sections(cfg, ModelSpec):
        where = f"{key}.path" if key else "path"
        if spec.path == "tiny":
            shapes.append(ModelShape(where, min(spec.max_model_len, TINY_POSITIONS),
                                     positions=TINY_POSITIONS, linear=LLAMA_LINEAR))
        elif Path(spec.path).expanduser().is_dir():
            shapes.append(shape_of_dir(Path(spec.path).expanduser(), where, spec.max_model_len))
        else:
            shapes.append(ModelShape(where, spec.max_model_len))
    for key, train in find_sections(cfg, TrainConfig):
        if train.model and Path(train.model).expanduser().is_dir():
            where = f"{key}.model" if key else "model"
            shapes.append(shape_of_dir(Path(train.model).expanduser(), where, 2**31))
    return shapes


def _keys(shapes: list[ModelShape]) -> str:
    return ", ".join(s.key for s in shapes)


def check_tensor_parallel(engine: EngineConfig, key: str, shapes: list[ModelShape]) -> None:
    """vLLM splits a model's attention heads evenly across ``tensor_parallel_size`` ranks, and
    its key/value heads too (or replicates them evenly when there are fewer than ranks)."""
    tp = engine.tensor_parallel_size
    if tp <= 1 or engine.kind not in VLLM_KINDS:
        return
    for s in shapes:
        if s.heads is None:
            continue
        fits = [d for d in range(1, s.heads + 1) if s.heads % d == 0]
        if s.heads % tp:
            raise ConfigError(f"{key}.tensor_parallel_size: {tp} ranks cannot split the "
                              f"{s.heads} attention heads of {s.key} evenly (vLLM's rule); "
                              f"expected one of {', '.join(map(str, fits))}")
        kv = s.kv_heads or s.heads
        if (kv >= tp and kv % tp) or (kv < tp and tp % kv):
            raise ConfigError(f"{key}.tensor_parallel_size: {tp} ranks cannot share the {kv} "
                              f"key/value heads of {s.key} evenly (vLLM splits them, or "
                              f"replicates them when fewer); expected a divisor or a multiple "
                              f"of {kv} that divides {s.heads}")


def check_lora_targets(train: Any, key: str, shapes: list[ModelShape]) -> None:
    """Every ``lora.target_modules`` name is a linear module of some model the config names
    (skipped when a model's modules are unknown: a hub id)."""
    if not train.lora.enabled or not shapes or any(s.linear is None for s in shapes):
        return
    known = frozenset().union(*(s.linear for s in shapes))
    for i, name in enumerate(train.lora.target_modules):
        if name not in known:
            raise ConfigError(f"{key}{'.' if key else ''}lora.target_modules[{i}]: {name!r} is not a linear module "
                              f"of {_keys(shapes)}; expected one of {', '.join(sorted(known))}")


def check_train_positions(train: Any, key: str, shapes: list[ModelShape]) -> None:
    """A training ``max_len`` within the positions of the models (of the largest, where the
    config names several; skipped when one's positions are unknown)."""
    if not shapes or any(s.positions is None for s in shapes):
        return
    most = max(s.positions for s in shapes)         # type: ignore[type-var]
    if train.max_len > most:
        raise ConfigError(f"{key}{'.' if key else ''}max_len: {train.max_len} tokens per example is beyond the "
                          f"{most} positions of {_keys(shapes)} (its max_position_embeddings); "
                          f"expected <= {most}")


def check_new_tokens(sampling: SamplingConfig, key: str, shapes: list[ModelShape]) -> None:
    """``max_new_tokens`` leaves room for a prompt (at least one token) in the context of the
    models (max_model_len, capped at the positions: vLLM stops a sequence there)."""
    if not shapes:
        return
    most = max(shapes, key=lambda s: s.context)
    if sampling.max_new_tokens >= most.context:
        raise ConfigError(f"{key}.max_new_tokens: {sampling.max_new_tokens:,} new tokens never fit "
                          f"in the {most.context:,}-token context of {most.key} (its "
                          f"max_model_len{' and positions' if most.positions else ''}), which "
                          f"holds the prompt too; expected < {most.context:,}")


def check_vllm_sampling(engine: EngineConfig, ekey: str, sampling: SamplingConfig,
                        key: str) -> None:
    """vLLM's SamplingParams refuses a temperature above 2 (HF samples at any)."""
    if engine.kind in VLLM_KINDS and sampling.temperature > VLLM_MAX_TEMPERATURE:
        raise ConfigError(f"{key}.temperature: expected <= {VLLM_MAX_TEMPERATURE:g} with "
                          f"{ekey}.kind {engine.kind} (vLLM refuses hotter sampling; engine.kind "
                          f"hf samples at any temperature), got {sampling.temperature:g}")


def _adapter_rank(path: str) -> int | None:
    from raysys.data.io import read_json_object
    from raysys.errors import ModelError
    from raysys.models.model_dir import ADAPTER_CONFIG

    f = Path(path).expanduser() / ADAPTER_CONFIG
    return _positive(read_json_object(f, ModelError).get("r")) if f.is_file() else None


def check_served_lora_ranks(cfg: Any, engine: EngineConfig, ekey: str) -> None:
    """A vLLM engine serves LoRA adapters up to ``max_lora_rank``, one of vLLM's ranks: each
    adapter a ModelSpec names, and each adapter a training stage leaves unmerged
    (``merge_output: false``) for the next stage to sample from."""
    from raysys.training.config import TrainConfig

    if engine.kind not in VLLM_KINDS:
        return
    served = [(f"{k}.adapter" if k else "adapter", _adapter_rank(s.adapter))
              for k, s in find_sections(cfg, ModelSpec) if s.adapter]
    served += [(f"{k}.lora.r" if k else "lora.r", t.lora.r)
               for k, t in find_sections(cfg, TrainConfig)
               if t.lora.enabled and t.merge_output is False and t.out is None]
    if served and engine.max_lora_rank not in VLLM_LORA_RANKS:
        raise ConfigError(f"{ekey}.max_lora_rank: expected one of "
                          f"{', '.join(map(str, VLLM_LORA_RANKS))} (the ranks vLLM serves; "
                          f"{served[0][0]} is an adapter it serves), got {engine.max_lora_rank}")
    for key, r in served:
        if r is not None and r > engine.max_lora_rank:
            raise ConfigError(f"{key}: LoRA rank {r} is above {ekey}.max_lora_rank "
                              f"{engine.max_lora_rank}, so vLLM cannot serve it; expected a rank "
                              f"<= {engine.max_lora_rank} (or raise max_lora_rank)")


def check_model_limits(cfg: Any) -> None:
    """Every check above on a validated config whose model dirs the preflight has checked."""
    from raysys.training.config import TrainConfig

    shapes = model_shapes(cfg)
    engines = find_sections(cfg, EngineConfig)
    samplings = find_sections(cfg, SamplingConfig)
    for ekey, engine in engines:
        ekey = ekey or "engine"
        check_tensor_parallel(engine, ekey, shapes)
        check_served_lora_ranks(cfg, engine, ekey)
        for skey, sampling in samplings:
            check_vllm_sampling(engine, ekey, sampling, skey or "sampling")
    for key, train in find_sections(cfg, TrainConfig):
        check_lora_targets(train, key, shapes)      # key "": a bare TrainConfig (`raysys train`)
        check_train_positions(train, key, shapes)
    for key, sampling in samplings:
        check_new_tokens(sampling, key or "sampling", shapes)
