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


def is_adapter_dir(path: str | Path) -> bool:
    """True when ``path`` is a PEFT adapter directory (holds ``adapter_config.json``)."""
    return (Path(path).expanduser() / ADAPTER_CONFIG).is_file()


def _looks_local(path_or_id: str) -> bool:
    return path_or_id.startswith((".", "/", "~")) or Path(path_or_id).expanduser().exists()


def _pickle_weights(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.suffix in PICKLE_WEIGHT_SUFFIXES)


def check_safetensors(f: Path) -> None:
    """Raise ``ModelError`` unless ``f`` has a well-formed safetensors header whose tensors fit
    in the file (a truncated download, a renamed pickle, random bytes). Reads the header only."""
    size = f.stat().st_size
    with f.open("rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 2 or 8 + n > size:
            raise ModelError(f"{f}: not a safetensors file (bad header length; file size {size} "
                             "bytes); re-save or re-download it")
        try:
            header = json.loads(fh.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
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
