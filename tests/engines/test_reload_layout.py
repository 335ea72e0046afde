"""Which weights a running vLLM engine takes in place (``reload_path``), on model dirs only.

A trained stage re-saves the tokenizer it loaded: transformers writes the load-time arguments
back into tokenizer_config.json (``local_files_only``, ``padding_side``), so SmolLM2 imported by
``raysys models import`` (``local_files_only: true``) and every model trained from it
(``false``) differed there, and each refresh of the real recipes restarted vLLM (~55-70 s on
2 cores) instead of reloading in place.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from raysys.engines.vllm_engine import layout_signature, reload_path


def _copy(src: Path, dst: Path, **tokenizer_config: object) -> Path:
    shutil.copytree(src, dst)
    path = dst / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg.update(tokenizer_config)
    path.write_text(json.dumps(cfg, indent=2))
    return dst


def test_load_time_tokenizer_keys_keep_the_reload_in_place(tiny_model_dir: Path,
                                                           tmp_path: Path) -> None:
    a = _copy(tiny_model_dir, tmp_path / "a", local_files_only=True, padding_side="left")
    b = _copy(tiny_model_dir, tmp_path / "b", local_files_only=False, padding_side="right",
              truncation_side="left")
    assert layout_signature(a) == layout_signature(b)
    assert reload_path(a, b) == "in_place"


def test_a_tokenizer_that_encodes_differently_restarts(tiny_model_dir: Path, tmp_path: Path) -> None:
    a = _copy(tiny_model_dir, tmp_path / "a")
    eos = _copy(tiny_model_dir, tmp_path / "eos", eos_token="<other>")
    assert reload_path(a, eos) == "restart"
    vocab = _copy(tiny_model_dir, tmp_path / "vocab")
    tok = json.loads((vocab / "tokenizer.json").read_text())
    tok["added_tokens"] = tok.get("added_tokens", []) + [
        {"id": 10_000, "content": "<new>", "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": False, "special": True}]
    (vocab / "tokenizer.json").write_text(json.dumps(tok))
    assert reload_path(a, vocab) == "restart"


def test_an_unparsable_tokenizer_config_is_compared_as_bytes(tiny_model_dir: Path,
                                                            tmp_path: Path) -> None:
    a = _copy(tiny_model_dir, tmp_path / "a")
    b = _copy(tiny_model_dir, tmp_path / "b")
    (a / "tokenizer_config.json").write_text("not json")
    (b / "tokenizer_config.json").write_text("not json either")
    assert reload_path(a, b) == "restart"
