"""A model directory's layout, read from its small files only: an HF dir (config.json and
safetensors weights, shards whole) or a LoRA adapter dir, a hub id fetched into a local dir, the
base an adapter names, and custom code refused unless allowed.

Weights are only ever read from safetensors: ``.bin`` files are pickles and can run code on
load. Every failure a user can cause is one ``ModelError`` naming the path and what was expected.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from raysys.data.io import read_json_object
from raysys.errors import ModelError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Only what a model dir needs: never the pickled duplicates many hub repos also carry.
HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"]
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
