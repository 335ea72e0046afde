"""Whether a model dir can be served and trained, read from its small files: config.json
fields, the safetensors headers' shapes and the tokenizer files. Never a weight, never a model
built: defects that otherwise surface in a Ray actor as hundreds of lines fail in the driver.

:func:`check_model_usable` checks one dir; :func:`check_config_models` every model a config
names (the run preflight, ``config show``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from raysys.data.io import read_json_object
from raysys.errors import ModelError
from raysys.models.model_dir import (ADAPTER_CONFIG, _looks_local, adapter_base, check_model_dir,
                                     check_safetensors, is_adapter_dir)

# config.json fields that size the model: each, when present, a positive integer (head_dim and
# num_key_value_heads may be null: transformers derives them).
SHAPE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "intermediate_size", "max_position_embeddings")
# Decoder families whose checkpoints name and lay out their projections as Llama does
# (q/k/v/o_proj, gate/up/down_proj, embed_tokens [vocab, hidden]): their shapes are checked
# against config.json. Other families only get the vocab rows and the layer count checked.
LLAMA_LIKE = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2",
                        "granite", "smollm3", "starcoder2"})
# Dtypes whose stored shape is the parameter's shape (quantized packings are not).
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
# Files that let transformers build a tokenizer, in the order it looks for them, with the
# package a file needs beyond transformers and tokenizers.
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"), ("tokenizer.model",),
                   ("vocab.txt",))
_TENSOR_RULES = (
    # name pattern, (config expression per dim), families it applies to (None: every family)
    (re.compile(r"(?:^|\.)(?:embed_tokens|wte|word_embeddings|embed_in)\.weight$"),
     ("vocab_size", "hidden_size"), None),
    (re.compile(r"(?:^|\.)lm_head\.weight$"), ("vocab_size", "hidden_size"), None),
    (re.compile(r"(?:^|\.)layers\.\d+\.self_attn\.q_proj\.weight$"), ("q_out", "hidden_size"), LLAMA_LIKE),
    (re.compile(r"(?:^|\.)layers\.\d+\.self_attn\.[kv]_proj\.weight$"), ("kv_out", "hidden_size"), LLAMA_LIKE),
    (re.compile(r"(?:^|\.)layers\.\d+\.self_attn\.o_proj\.weight$"), ("hidden_size", "q_out"), LLAMA_LIKE),
    (re.compile(r"(?:^|\.)layers\.\d+\.mlp\.(?:gate|up)_proj\.weight$"),
     ("intermediate_size", "hidden_size"), LLAMA_LIKE),
    (re.compile(r"(?:^|\.)layers\.\d+\.mlp\.down_proj\.weight$"),
     ("hidden_size", "intermediate_size"), LLAMA_LIKE),
)
_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_KNOWN_MODEL_TYPES: frozenset[str] | None = None


def _transformers_dir() -> Path | None:
    """Where transformers is installed, found without importing it (that takes seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("transformers")
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def known_model_types() -> frozenset[str] | None:
    """The ``model_type`` values this transformers can build, without importing transformers
    (its auto mapping is a plain data module, loaded on its own in ~50 ms instead of ~5 s);
    None when that file is not where this transformers version keeps it."""
    global _KNOWN_MODEL_TYPES
    if _KNOWN_MODEL_TYPES is None:
        import importlib.util

        root = _transformers_dir()
        if root is None:
            return None
        try:
            mod_spec = importlib.util.spec_from_file_location(
                "_raysys_hf_auto_mappings", root / "models" / "auto" / "auto_mappings.py")
            mod = importlib.util.module_from_spec(mod_spec)          # type: ignore[arg-type]
            mod_spec.loader.exec_module(mod)                         # type: ignore[union-attr]
            _KNOWN_MODEL_TYPES = frozenset(mod.CONFIG_MAPPING_NAMES)
        except Exception:   # noqa: BLE001 - another layout: fall back to transformers itself
            return None
    return _KNOWN_MODEL_TYPES


def _is_known_model_type(model_type: str) -> bool:
    """Whether transformers knows ``model_type``: its auto mapping file or one of its model
    packages answers yes cheaply; a miss is confirmed with transformers' own mapping (a few
    types are added outside that file), so only a bad dir pays for importing it."""
    known = known_model_types()
    root = _transformers_dir()
    if known is not None and model_type in known or (
            root is not None and re.fullmatch(r"[\w-]+", model_type) is not None
            and (root / "models" / model_type.replace("-", "_")).is_dir()):
        return True
    try:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    except Exception:   # noqa: BLE001 - cannot tell: leave it to loading
        return True
    return model_type in CONFIG_MAPPING_NAMES


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_composite(cfg: dict[str, Any]) -> bool:
    """A config of several sub-models (``text_config``, ``vision_config``, encoder/decoder):
    its sizes live in the sub-configs, so the top-level shape checks do not apply."""
    return any(isinstance(v, dict) and ("model_type" in v or k.endswith("_config"))
               for k, v in cfg.items())


def check_model_config(cfg: dict[str, Any], where: str, *, trust_remote_code: bool = False) -> None:
    """Raise ``ModelError`` (prefixed ``where``, the config.json path) when a model's config
    cannot describe a model transformers builds: no or an unknown ``model_type`` (unless custom
    code is allowed), a size field that is not a positive integer, heads that do not divide the
    hidden size (without ``head_dim``) or key/value heads that do not divide the heads. Pure."""
    custom = bool(cfg.get("auto_map")) and trust_remote_code
    model_type = cfg.get("model_type")
    if not custom:
        if not isinstance(model_type, str) or not model_type:
            raise ModelError(f"{where}: no model_type (transformers cannot tell which architecture "
                             "to build); use the config.json saved with these weights")
        if not _is_known_model_type(model_type):
            raise ModelError(f"{where}: model_type {model_type!r} is not an architecture this "
                             "transformers knows; fix model_type, upgrade transformers, or (custom "
                             "code) add auto_map and set trust_remote_code: true")
    if _is_composite(cfg):
        return
    for k in SHAPE_KEYS:
        v = cfg.get(k)
        if v is None and (k not in cfg or k in ("head_dim", "num_key_value_heads")):
            continue
        if not _positive_int(v):
            raise ModelError(f"{where}: {k}: expected a positive integer, got {v!r}")
    hidden, heads = cfg.get("hidden_size"), cfg.get("num_attention_heads")
    kv = cfg.get("num_key_value_heads")
    if hidden and heads and cfg.get("head_dim") is None and hidden % heads:
        raise ModelError(f"{where}: hidden_size {hidden} is not a multiple of num_attention_heads "
                         f"{heads} (and no head_dim is set)")
    if heads and kv and heads % kv:
        raise ModelError(f"{where}: num_attention_heads {heads} is not a multiple of "
                         f"num_key_value_heads {kv}")


def _dims(cfg: dict[str, Any]) -> dict[str, int]:
    """The sizes :data:`_TENSOR_RULES` use, from a checked config (missing ones left out)."""
    out = {k: cfg[k] for k in ("vocab_size", "hidden_size", "intermediate_size")
           if _positive_int(cfg.get(k))}
    heads = cfg.get("num_attention_heads")
    if _positive_int(heads) and "hidden_size" in out:
        head_dim = cfg.get("head_dim") or out["hidden_size"] // heads
        kv = cfg.get("num_key_value_heads") or heads
        out["q_out"], out["kv_out"] = heads * head_dim, kv * head_dim
    return out


def check_config_matches_weights(cfg: dict[str, Any], tensors: dict[str, tuple[str, list[int], str]],
                                 where: str) -> None:
    """Raise ``ModelError`` when the stored tensors (name -> ``(dtype, shape, file name)``, from
    the safetensors headers) do not have the shapes config.json implies (transformers would
    refuse to load them, or, for missing layers, initialise them at random). Pure."""
    if _is_composite(cfg):
        return
    family = cfg.get("model_type")
    dims = _dims(cfg)
    for name, (dtype, shape, file) in tensors.items():
        if dtype not in FLOAT_DTYPES:
            continue
        for pattern, needs, families in _TENSOR_RULES:
            if families is not None and family not in families or not pattern.search(name):
                continue
            if families is None:        # other families: only the vocab rows are sure
                needs = needs[:1]
            want = [dims.get(n) for n in needs]
            if None in want:
                break
            if list(shape[:len(want)]) != want or len(shape) != 2:
                implied = " x ".join(needs).replace("q_out", "num_attention_heads * head_dim") \
                    .replace("kv_out", "num_key_value_heads * head_dim")
                said = f"{want}" if len(want) == 2 else f"{want[0]} rows"
                raise ModelError(f"{where}: does not match the weights: {file} stores {name} as "
                                 f"{list(shape)}, config.json implies {said} ({implied}); use "
                                 "the config.json saved with these weights")
            break
    layers = cfg.get("num_hidden_layers")
    found = {int(m.group(1)) for name in tensors if (m := _LAYER_INDEX.search(name))}
    if _positive_int(layers) and found:
        missing = sorted(set(range(layers)) - found)
        if missing:
            shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
            raise ModelError(f"{where}: num_hidden_layers is {layers} but the weights hold no "
                             f"layer {shown} (transformers would initialise them at random); "
                             "use the config.json saved with these weights")


def tokenizer_size(tokenizer_json: dict[str, Any]) -> int | None:
    """How many ids a ``tokenizer.json`` can produce (its largest id + 1, added tokens
    included), or None when its model has no vocab this can read. Pure."""
    model = tokenizer_json.get("model")
    vocab = model.get("vocab") if isinstance(model, dict) else None
    ids: list[int] = []
    if isinstance(vocab, dict):
        ids = [v for v in vocab.values() if isinstance(v, int)]
    elif isinstance(vocab, list):            # Unigram: [[piece, score], ...], ids by position
        ids = [len(vocab) - 1] if vocab else []
    for t in tokenizer_json.get("added_tokens") or []:
        if isinstance(t, dict) and isinstance(t.get("id"), int):
            ids.append(t["id"])
    return max(ids) + 1 if ids else None


def check_tokenizer_files(d: Path) -> tuple[Path, int | None]:
    """Raise ``ModelError`` unless ``d`` holds a tokenizer transformers can build: one of
    :data:`TOKENIZER_FILES` (a sentencepiece ``tokenizer.model`` alone needs the sentencepiece
    package), every JSON file of it well formed. Returns the main file and the number of ids
    the tokenizer produces (None when unknown)."""
    import importlib.util

    for name in ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
        if (d / name).is_file():
            read_json_object(d / name, ModelError)
    for files in TOKENIZER_FILES:
        if not all((d / f).is_file() for f in files):
            continue
        main = d / files[0]
        if files[0] == "tokenizer.json":
            tj = read_json_object(main, ModelError)
            if not isinstance(tj.get("model"), dict):
                raise ModelError(f"{main}: not a tokenizers file (no 'model' object); re-save the "
                                 "tokenizer (save_pretrained)")
            return main, tokenizer_size(tj)
        if files[0] == "vocab.json":
            vocab = read_json_object(main, ModelError)
            added = read_json_object(d / "added_tokens.json", ModelError) \
                if (d / "added_tokens.json").is_file() else {}
            ids = [v for v in (*vocab.values(), *added.values()) if isinstance(v, int)]
            return main, (max(ids) + 1 if ids else None)
        if files[0] == "tokenizer.model" and importlib.util.find_spec("sentencepiece") is None:
            raise ModelError(f"{main}: a sentencepiece tokenizer, and the sentencepiece package "
                             "is not installed (pip install sentencepiece), nor is there a "
                             "tokenizer.json beside it")
        return main, None
    raise ModelError(f"model directory {d}: no tokenizer (expected tokenizer.json, or "
                     "vocab.json + merges.txt, tokenizer.model, vocab.txt); copy the tokenizer "
                     "files of the model these weights came from")


def _tensors(d: Path) -> dict[str, tuple[str, list[int], str]]:
    """Every stored tensor of ``d``'s safetensors files: name -> (dtype, shape, file name)."""
    out: dict[str, tuple[str, list[int], str]] = {}
    for f in sorted(d.glob("*.safetensors")):
        for name, entry in check_safetensors(f).items():
            if name != "__metadata__" and isinstance(entry, dict) \
                    and isinstance(entry.get("shape"), list):
                out[name] = (str(entry.get("dtype")), entry["shape"], f.name)
    return out


def check_model_usable(path: str | Path, trust_remote_code: bool = False,
                       key: str | None = None) -> None:
    """Everything :func:`check_model_dir` checks, then what serving or training the model
    needs from its small files: a config.json transformers can build
    (:func:`check_model_config`) whose sizes match the stored tensors
    (:func:`check_config_matches_weights`), and a tokenizer (:func:`check_tokenizer_files`)
    with no more ids than ``vocab_size``. An adapter dir: its base (when local) and its own
    tokenizer when it carries one. ``key`` prefixes every message. Reads no weights."""
    d = check_model_dir(path, trust_remote_code, key)
    try:
        if is_adapter_dir(d):
            base = adapter_base(d)
            if _looks_local(base) and not is_adapter_dir(base):
                _check_usable_full(check_model_dir(base, trust_remote_code), trust_remote_code)
            if (d / "tokenizer_config.json").is_file() or (d / "tokenizer.json").is_file():
                check_tokenizer_files(d)
            return
        _check_usable_full(d, trust_remote_code)
    except ModelError as e:
        raise ModelError(f"{key}: {e}" if key else str(e)) from None


def _check_usable_full(d: Path, trust_remote_code: bool) -> None:
    cfg_file = d / "config.json"
    cfg = read_json_object(cfg_file, ModelError)
    check_model_config(cfg, str(cfg_file), trust_remote_code=trust_remote_code)
    if cfg.get("auto_map") and trust_remote_code:     # custom code: its own sizes and names
        check_tokenizer_files(d)
        return
    check_config_matches_weights(cfg, _tensors(d), str(cfg_file))
    tok_file, n_ids = check_tokenizer_files(d)
    vocab = cfg.get("vocab_size")
    if n_ids is not None and _positive_int(vocab) and n_ids > vocab and not _is_composite(cfg):
        raise ModelError(f"{cfg_file}: vocab_size {vocab} is smaller than the tokenizer's {n_ids} "
                         f"ids ({tok_file.name}); an id >= {vocab} would index past the "
                         "embedding: use the config and tokenizer saved with these weights")


def check_model_spec(spec: Any, key: str) -> None:
    """Driver-side check of a ``ModelSpec`` (``path`` and ``adapter``) at config key ``key``;
    hub ids and ``tiny`` (built by the recipe) are left to loading."""
    trust = bool(getattr(spec, "trust_remote_code", False))
    if _looks_local(spec.path):
        d = check_model_dir(spec.path, trust, f"{key}.path")
        if is_adapter_dir(d):
            base = adapter_base(d)
            if _looks_local(base):
                check_model_dir(base, trust, f"{key}.path (the adapter's base)")
        # config.json sizes against the weights, the tokenizer: what a replica needs to start
        check_model_usable(d, trust, f"{key}.path")
    if spec.adapter is not None:
        a = Path(spec.adapter).expanduser()
        if a.is_dir() and not is_adapter_dir(a):
            raise ModelError(f"{key}.adapter: {a}: not a LoRA adapter dir (no {ADAPTER_CONFIG})")
        check_model_dir(a, trust, f"{key}.adapter")


def check_config_models(cfg: Any, key: str = "") -> None:
    """Check every model a validated config names, before any work: each ``ModelSpec``-like
    section (``path``/``adapter``/``trust_remote_code``) and each section with a ``model`` dir
    (a ``TrainConfig``). Walks nested dataclasses, dicts and lists."""
    import dataclasses

    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        names = [f.name for f in dataclasses.fields(cfg)]
        if {"path", "adapter", "trust_remote_code"} <= set(names) and isinstance(cfg.path, str):
            check_model_spec(cfg, key or "model")
            return
        if {"model", "trust_remote_code"} <= set(names) and isinstance(cfg.model, str):
            check_model_dir(cfg.model, bool(cfg.trust_remote_code), f"{key}.model" if key else "model")
        for name in names:
            check_config_models(getattr(cfg, name), f"{key}.{name}" if key else name)
    elif isinstance(cfg, dict):
        for k, v in cfg.items():
            check_config_models(v, f"{key}.{k}" if key else str(k))
    elif isinstance(cfg, (list, tuple)):
        for i, v in enumerate(cfg):
            check_config_models(v, f"{key}[{i}]")


