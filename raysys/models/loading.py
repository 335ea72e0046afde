"""Load models and tokenizers from local HF dirs, hub ids, or LoRA adapter dirs.

Every failure a user can cause (missing dir, no weights, pickle-only weights, remote code,
offline hub) is one ``ModelError`` naming the path and what was expected. Weights are only
ever read from safetensors: ``.bin`` files are pickles and can run code on load.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raysys.data.io import read_json_object
from raysys.errors import ModelError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Only what a model dir needs: never the pickled duplicates many hub repos also carry.
HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"]
DTYPES = ("auto", "float32", "bfloat16", "float16")
# The safetensors format caps its JSON header at 100 MB (safetensors' own loader refuses more);
# a larger "length" is a file that is not safetensors, and reading it would allocate that much.
MAX_SAFETENSORS_HEADER = 100_000_000


def is_adapter_dir(path: str | Path) -> bool:
    """True when ``path`` is a PEFT adapter directory (holds ``adapter_config.json``)."""
    return (Path(path).expanduser() / ADAPTER_CONFIG).is_file()


def _looks_local(path_or_id: str) -> bool:
    return path_or_id.startswith((".", "/", "~")) or Path(path_or_id).expanduser().exists()


def _pickle_weights(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.suffix in PICKLE_WEIGHT_SUFFIXES)


def check_safetensors(f: Path) -> dict[str, Any]:
    """Raise ``ModelError`` unless ``f`` has a well-formed safetensors header whose tensors fit
    in the file (a truncated download, a renamed pickle, random bytes). Reads the header only
    and returns it (tensor name -> ``{dtype, shape, data_offsets}``, plus ``__metadata__``)."""
    size = f.stat().st_size
    with f.open("rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 2 or 8 + n > size or n > MAX_SAFETENSORS_HEADER:
            raise ModelError(f"{f}: not a safetensors file (bad header length; file size {size} "
                             "bytes); re-save or re-download it")
        try:
            header = json.loads(fh.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ModelError(f"{f}: corrupt safetensors header (not JSON); re-save or "
                             "re-download it") from None
    if not isinstance(header, dict):
        raise ModelError(f"{f}: corrupt safetensors header (not an object)")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) for o in offsets) and 0 <= offsets[0] <= offsets[1]):
            raise ModelError(f"{f}: corrupt safetensors header (tensor {name!r} has no valid "
                             "data_offsets)")
        end = max(end, offsets[1])
    if 8 + n + end > size:
        raise ModelError(f"{f}: truncated ({size} bytes, its header needs {8 + n + end}); "
                         "re-save or re-download it")
    return header


def check_model_dir(path: str | Path, trust_remote_code: bool | None = None,
                    key: str | None = None) -> Path:
    """Raise ``ModelError`` unless ``path`` is a usable full model dir or LoRA adapter dir.

    Cheap enough for config validation in the driver (before Ray): it reads config.json /
    adapter_config.json and the safetensors headers, never the weights. With
    ``trust_remote_code`` False a config.json with ``auto_map`` (custom code) is refused
    (``None``: not checked here; :func:`load_model` checks it). ``key`` (a config key or flag)
    prefixes every message. Returns the directory.
    """
    d = Path(path).expanduser()
    try:
        _check_layout(d, trust_remote_code)
    except ModelError as e:
        raise ModelError(f"{key}: {e}" if key else str(e)) from None
    return d


def _check_layout(d: Path, trust_remote_code: bool | None) -> None:
    if not d.exists():
        raise ModelError(f"model directory not found: {d}")
    if not d.is_dir():
        raise ModelError(f"model path is not a directory: {d}")
    if is_adapter_dir(d):
        read_json_object(d / ADAPTER_CONFIG, ModelError)
        if not (d / ADAPTER_WEIGHTS).is_file():
            found = _pickle_weights(d)
            extra = (f" (found only {', '.join(found)}: pickle weights are not loaded)"
                     if found else "")
            raise ModelError(f"adapter directory {d}: missing {ADAPTER_WEIGHTS}{extra}")
        check_safetensors(d / ADAPTER_WEIGHTS)
        return
    if not (d / "config.json").is_file():
        raise ModelError(f"model directory {d}: missing config.json "
                         f"(expected an HF model dir or a LoRA adapter dir with {ADAPTER_CONFIG})")
    if trust_remote_code is not None:
        check_remote_code(d, trust_remote_code)
    else:
        read_json_object(d / "config.json", ModelError)
    weights = sorted(d.glob("*.safetensors"))
    if not weights:
        found = _pickle_weights(d)
        if found:
            raise ModelError(f"model directory {d}: only pickle weights ({', '.join(found)}); "
                             "re-save it with safetensors (save_pretrained) to load it here")
        raise ModelError(f"model directory {d}: no *.safetensors weights")
    index = d / "model.safetensors.index.json"
    if index.is_file():
        shards = read_json_object(index, ModelError).get("weight_map") or {}
        missing = sorted({s for s in shards.values() if not (d / str(s)).is_file()})
        if missing:
            raise ModelError(f"{index}: missing shard(s) {', '.join(missing)}")
    for f in weights:
        check_safetensors(f)


# ------------------------------------------------------------------------------------------
# What a model dir must hold to be served and trained, read from its small files: config.json
# fields, the safetensors headers' shapes and the tokenizer files. Never a weight, never a model
# built: defects that otherwise surface in a Ray actor as hundreds of lines fail in the driver.
# ------------------------------------------------------------------------------------------

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


def resolve_model_path(path_or_id: str | Path) -> str:
    """Turn a local dir or a hub id (``owner/name``) into a checked local directory path.

    Local dirs must hold ``config.json`` plus safetensors weights, or be an adapter dir.
    Hub ids are fetched (or found in the HF cache) with ``huggingface_hub.snapshot_download``,
    safetensors and tokenizer files only.
    """
    path_or_id = str(path_or_id)
    if not _looks_local(path_or_id) and HUB_ID.match(path_or_id):
        from huggingface_hub import snapshot_download

        try:
            local = snapshot_download(path_or_id, allow_patterns=HUB_ALLOW_PATTERNS)
        except Exception as e:  # offline, unknown repo, gated, network: all mean "can't have it"
            raise ModelError(
                f"hub model {path_or_id!r}: not in the local HF cache and could not be downloaded "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                f"download it elsewhere and pass the local directory instead (no local directory "
                f"{Path(path_or_id).resolve()} exists either)") from None
        d = Path(local)
    else:
        d = Path(path_or_id).expanduser().resolve()
    check_model_dir(d)
    return str(d)


def adapter_base(adapter_dir: Path) -> str:
    """The base model named by an adapter's config; relative paths resolve beside the adapter."""
    cfg = read_json_object(adapter_dir / ADAPTER_CONFIG, ModelError)
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise ModelError(f"{adapter_dir / ADAPTER_CONFIG}: no base_model_name_or_path; "
                         "pass the base model path and this dir as the adapter")
    beside = adapter_dir / base
    if not Path(base).is_absolute() and beside.is_dir():
        return str(beside)
    return base


def check_remote_code(model_dir: Path, trust_remote_code: bool) -> None:
    """Refuse a model whose config.json maps to custom code unless ``trust_remote_code``."""
    cfg = read_json_object(model_dir / "config.json", ModelError)
    if cfg.get("auto_map") and not trust_remote_code:
        raise ModelError(f"model directory {model_dir}: config.json has auto_map (custom code); "
                         "set trust_remote_code: true in the model config to allow running it")


def as_torch_dtype(dtype: str | torch.dtype) -> Any:
    """``"float32"``/``"bfloat16"``/``"float16"`` -> the torch dtype; ``"auto"`` and dtypes pass."""
    import torch

    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in DTYPES:
        raise ModelError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    return getattr(torch, dtype)


def load_tokenizer(path: str | Path, *, padding_side: str = "left",
                   trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load the tokenizer of a model dir, hub id or adapter dir (falling back to its base).

    ``padding_side`` defaults to left (generation); a tokenizer without a pad token gets
    ``pad_token = eos_token`` so batches can always be padded.
    """
    from transformers import AutoTokenizer

    d = Path(resolve_model_path(path))
    if is_adapter_dir(d) and not (d / "tokenizer_config.json").is_file():
        d = Path(resolve_model_path(adapter_base(d)))
    tok = AutoTokenizer.from_pretrained(d, trust_remote_code=trust_remote_code)
    tok.padding_side = padding_side
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str | Path, *, dtype: str | torch.dtype = "auto", device: str | None = None,
               trust_remote_code: bool = False, adapter: str | Path | None = None,
               merge: bool = False) -> PreTrainedModel:
    """Load a causal LM for inference (eval mode), optionally with a LoRA adapter on top.

    ``path`` may itself be an adapter dir: its base comes from ``adapter_config.json``.
    With ``merge`` the adapter is folded into the weights (a plain ``PreTrainedModel``);
    otherwise a ``PeftModel`` is returned when an adapter is used.
    """
    from transformers import AutoModelForCausalLM

    base = Path(resolve_model_path(path))
    if is_adapter_dir(base):
        if adapter is not None:
            raise ModelError(f"{path} is itself a LoRA adapter; cannot also apply adapter {adapter}")
        adapter, base = str(base), Path(resolve_model_path(adapter_base(base)))
        if is_adapter_dir(base):
            raise ModelError(f"adapter {adapter}: its base {base} is another adapter (unsupported)")
    check_remote_code(base, trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=as_torch_dtype(dtype), use_safetensors=True, trust_remote_code=trust_remote_code)
    if adapter is not None:
        model = _apply_adapter(model, adapter, merge=merge)
    if device is not None:
        model = model.to(device)
    return model.eval()


def _apply_adapter(model: PreTrainedModel, adapter: str | Path, *, merge: bool) -> Any:
    from peft import PeftModel

    adapter_dir = Path(resolve_model_path(adapter))
    if not is_adapter_dir(adapter_dir):
        raise ModelError(f"adapter {adapter_dir}: not a LoRA adapter dir (no {ADAPTER_CONFIG})")
    peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    return peft_model.merge_and_unload() if merge else peft_model


def merge_adapter(base_path: str | Path, adapter_path: str | Path, out_dir: str | Path, *,
                  trust_remote_code: bool = False) -> Path:
    """Fold a LoRA adapter into its base and save a full model dir (safetensors + tokenizer).

    Written beside ``out_dir`` and renamed into place, so ``out_dir`` is complete or absent.
    The tokenizer is the adapter's own when it carries one, else the base's.
    """
    model = load_model(base_path, adapter=adapter_path, merge=True,
                       trust_remote_code=trust_remote_code)
    adapter_dir = Path(resolve_model_path(adapter_path))
    tok_src = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_path
    tokenizer = load_tokenizer(str(tok_src), trust_remote_code=trust_remote_code)

    return save_pretrained_atomic(model, tokenizer, out_dir)


def save_pretrained_atomic(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None,
                           out_dir: str | Path) -> Path:
    """Save ``model`` (safetensors) and ``tokenizer`` so ``out_dir`` is complete or absent.

    Everything is written to a temp dir beside ``out_dir`` and renamed into place; an existing
    ``out_dir`` is first renamed aside and deleted only after the new one is in place, so a
    crash never leaves a half-deleted ``out_dir``. Returns the resolved ``out_dir``.
    """
    out = Path(out_dir).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    old: Path | None = None
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(old / out.name)
        tmp.rename(out)
    except BaseException:
        if old is not None and (old / out.name).exists() and not out.exists():
            (old / out.name).rename(out)   # put the previous dir back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out


def count_safetensors_params(d: Path) -> int:
    """Number of parameters stored in ``d``'s safetensors files, read from headers only.

    Tied weights are stored once, so for a full model this equals ``model.num_parameters()``.
    """
    from safetensors import safe_open

    total = 0
    for f in sorted(d.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                n = 1
                for dim in st.get_slice(key).get_shape():
                    n *= dim
                total += n
    return total


def model_info(path: str | Path) -> dict[str, Any]:
    """A summary of a model or adapter dir without loading weights (for ``raysys models info``).

    Keys: path, kind ("full" or "adapter"), params (stored in this dir), config (the model's
    ``config.json`` or the adapter's config), base (adapter only), tokenizer (vocab size,
    special tokens, whether a chat template is set).
    """
    d = Path(resolve_model_path(path))
    # a dir that cannot serve (config vs weights, tokenizer) is an error, not a summary;
    # custom code is described, not run, so auto_map is no reason to refuse here
    check_model_usable(d, trust_remote_code=True)
    info: dict[str, Any] = {"path": str(d), "params": count_safetensors_params(d)}
    if is_adapter_dir(d):
        info["kind"] = "adapter"
        info["config"] = read_json_object(d / ADAPTER_CONFIG, ModelError)
        info["base"] = adapter_base(d)
    else:
        info["kind"] = "full"
        info["config"] = read_json_object(d / "config.json", ModelError)
    try:
        tok = load_tokenizer(str(d))
    except ModelError as e:   # an adapter whose base is not here: still describe the adapter
        info["tokenizer"] = {"error": str(e)}
    else:
        info["tokenizer"] = {
            "vocab_size": len(tok),
            "bos": tok.bos_token, "eos": tok.eos_token, "pad": tok.pad_token,
            "chat_template": bool(tok.chat_template),
        }
    return info
