"""Load models and tokenizers from local HF dirs, hub ids, or LoRA adapter dirs; merge adapters;
save a model dir atomically; describe one (``raysys models info``).

Every failure a user can cause (missing dir, no weights, pickle-only weights, remote code,
offline hub) is one ``ModelError`` naming the path and what was expected. Weights are only
ever read from safetensors: ``.bin`` files are pickles and can run code on load.

What a dir must hold is checked in :mod:`raysys.models.model_dir` (layout, safetensors headers,
hub ids) and :mod:`raysys.models.usable` (config.json against the weights, the tokenizer);
their names are re-exported here.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raysys.data.io import read_json_object
from raysys.errors import ModelError
from raysys.models.model_dir import (ADAPTER_CONFIG, ADAPTER_WEIGHTS,  # noqa: F401
                                     HUB_ALLOW_PATTERNS, HUB_ID, MAX_SAFETENSORS_HEADER,
                                     PICKLE_WEIGHT_SUFFIXES,
                                     _looks_local, adapter_base, check_model_dir,
                                     check_remote_code, check_safetensors, is_adapter_dir,
                                     resolve_model_path)
from raysys.models.usable import (FLOAT_DTYPES, LLAMA_LIKE, SHAPE_KEYS,  # noqa: F401
                                  TOKENIZER_FILES, check_config_matches_weights,
                                  check_config_models, check_model_config, check_model_spec,
                                  check_model_usable, check_tokenizer_files, known_model_types,
                                  tokenizer_size)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DTYPES = ("auto", "float32", "bfloat16", "float16")


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
