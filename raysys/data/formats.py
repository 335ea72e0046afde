"""Interchange formats, import and export: LLaMA-Factory, the LLM2 verifier JSONL, OpenAI messages.

- LLaMA-Factory: a directory with ``dataset_info.json`` (one entry per data file, a ``columns``
  mapping, ``ranking: true`` for preference data) and JSON data files, laid out as the
  weak-to-strong reasoning paper's ``data/llama_factory``. ``alpaca`` rows carry
  prompt/query/response(/history/system) columns; ``sharegpt`` rows a ``conversations`` list of
  ``{from, value}`` turns. Preference rows hold ``chosen``/``rejected`` (alpaca strings or
  sharegpt turns) or, in the paper's older layout, ``output: [chosen, rejected]``.
  SFT <-> ``sft`` table, preference <-> ``pairs`` table.
- LLM2 verifier JSONL: ``{"messages": [{role, content}...], "samples": [[pos, gt, neg], ...]}``
  <-> ``token_pairs`` table.
- OpenAI chat fine-tuning JSONL: ``{"messages": [...]}`` <-> ``sft`` table.

Our ``sft``/``pairs`` tables hold one prompt string. Multi-turn inputs (a system prompt,
history) are flattened into it by joining the turns' texts with blank lines; a single-turn
prompt round-trips unchanged. Alpaca's instruction and input are joined with one newline,
as LLaMA-Factory itself does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from raysys.data.io import (
    DataError, atomic_write_json, atomic_write_jsonl, read_json_object, read_records,
)
from raysys.data.schema import RENDERS, SchemaError, conform

DATASET_INFO = "dataset_info.json"
Formatting = Literal["alpaca", "sharegpt"]

# LLaMA-Factory's defaults when dataset_info.json leaves a column or tag out.
_ALPACA_DEFAULTS = {"prompt": "instruction", "query": "input", "response": "output"}
_SHAREGPT_COLUMNS = {"messages": "conversations"}
_SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                  "assistant_tag": "gpt", "system_tag": "system"}


def _where(path: Path, n: int) -> str:
    """file:line for JSONL; a JSON list has no useful line numbers, so name the item."""
    return f"{path}: item {n}" if path.suffix == ".json" else f"{path}:{n}"


def _text(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{field}' must be a string, got {type(value).__name__}")
    return value


def table_kind(table: pa.Table) -> str:
    """``pairs`` when the table has chosen/rejected columns, ``sft`` when it has response."""
    cols = set(table.column_names)
    if {"prompt", "chosen", "rejected"} <= cols:
        return "pairs"
    if {"prompt", "response"} <= cols:
        return "sft"
    raise SchemaError(f"expected an sft (prompt, response) or pairs (prompt, chosen, rejected) "
                      f"table, got columns {sorted(cols)}")


def flatten_turns(texts: list[str]) -> str:
    """The prompt string for a list of turn texts (system, history ..., last user turn)."""
    return "\n\n".join(t for t in texts if t)


# ------------------------------------------------------------------------------------------
# LLaMA-Factory export
# ------------------------------------------------------------------------------------------


def _alpaca_rows(rows: list[dict[str, Any]], kind: str, legacy_pairs: bool) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        row: dict[str, Any] = {"instruction": r["prompt"], "input": ""}
        if kind == "sft":
            row["output"] = r["response"]
            row["source"] = r.get("source")
        elif legacy_pairs:
            row["output"] = [r["chosen"], r["rejected"]]
            row["meta"] = r.get("meta")
        else:
            row.update(chosen=r["chosen"], rejected=r["rejected"], meta=r.get("meta"))
        out.append(row)
    return out


def _sharegpt_rows(rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        turns = [{"from": "human", "value": r["prompt"]}]
        if kind == "sft":
            turns.append({"from": "gpt", "value": r["response"]})
            out.append({"conversations": turns, "source": r.get("source")})
        else:
            out.append({"conversations": turns, "chosen": {"from": "gpt", "value": r["chosen"]},
                        "rejected": {"from": "gpt", "value": r["rejected"]}, "meta": r.get("meta")})
    return out


def _info_entry(file_name: str, kind: str, formatting: Formatting, legacy_pairs: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"file_name": file_name}
    if kind == "pairs":
        entry["ranking"] = True
    if formatting == "sharegpt":
        entry["formatting"] = "sharegpt"
        entry["columns"] = {"messages": "conversations"}
        if kind == "pairs":
            entry["columns"].update(chosen="chosen", rejected="rejected")
        entry["tags"] = {"role_tag": "from", "content_tag": "value",
                         "user_tag": "human", "assistant_tag": "gpt"}
    elif kind == "sft" or legacy_pairs:
        entry["columns"] = {"prompt": "instruction", "query": "input", "response": "output"}
    else:
        entry["columns"] = {"prompt": "instruction", "query": "input",
                            "chosen": "chosen", "rejected": "rejected"}
    return entry


def export_llamafactory(tables: dict[str, pa.Table], out_dir: str | Path, *,
                        formatting: Formatting = "alpaca", legacy_pairs: bool = False) -> Path:
    """Write each table as ``<name>.json`` plus a ``dataset_info.json`` entry named ``<name>``.

    ``sft`` tables become SFT entries, ``pairs`` tables ``ranking: true`` entries. With
    ``legacy_pairs`` alpaca pairs use ``output: [chosen, rejected]`` (the weak-to-strong
    paper's files, LLaMA-Factory <= 0.8); otherwise ``chosen``/``rejected`` columns (current).
    An existing ``dataset_info.json`` keeps its other entries. Returns ``dataset_info.json``.
    """
    if formatting not in ("alpaca", "sharegpt"):
        raise ValueError(f"formatting: expected 'alpaca' or 'sharegpt', got {formatting!r}")
    out = Path(out_dir)
    if not tables:
        raise DataError("export_llamafactory: no tables given")
    info_path = out / DATASET_INFO
    info: dict[str, Any] = {}
    if info_path.is_file():
        info = read_json_object(info_path)
    prepared = []
    for name, table in tables.items():
        kind = table_kind(table)
        rows = conform(table, kind).to_pylist()
        if not rows:
            raise DataError(f"export_llamafactory: table '{name}' is empty")
        data = _sharegpt_rows(rows, kind) if formatting == "sharegpt" else \
            _alpaca_rows(rows, kind, legacy_pairs)
        prepared.append((name, f"{name}.json", data, _info_entry(f"{name}.json", kind, formatting,
                                                                  legacy_pairs)))
    # Data files first, the index last: a reader never sees an entry whose file is missing.
    for name, file_name, data, entry in prepared:
        atomic_write_json(out / file_name, data)
        info[name] = entry
    atomic_write_json(info_path, info)
    return info_path


# ------------------------------------------------------------------------------------------
# LLaMA-Factory import
# ------------------------------------------------------------------------------------------


def _alpaca_prompt(row: dict[str, Any], cols: dict[str, str], where: str) -> str:
    texts: list[str] = []
    if cols.get("system") and row.get(cols["system"]):
        texts.append(_text(row[cols["system"]], where, cols["system"]))
    for turn in (row.get(cols["history"]) or []) if cols.get("history") else []:
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2):
            raise DataError(f"{where}: field '{cols['history']}' must be a list of [query, response]")
        texts.extend(_text(t, where, cols["history"]) for t in turn)
    if cols["prompt"] not in row:
        raise DataError(f"{where}: missing field '{cols['prompt']}' (the prompt column)")
    current = [_text(row[cols["prompt"]], where, cols["prompt"])]
    if row.get(cols["query"]):
        current.append(_text(row[cols["query"]], where, cols["query"]))
    texts.append("\n".join(current))
    return flatten_turns(texts)


def _alpaca_record(row: dict[str, Any], cols: dict[str, str], ranking: bool, where: str) -> dict[str, Any]:
    prompt = _alpaca_prompt(row, cols, where)
    if not ranking:
        if row.get(cols["response"]) is None:
            raise DataError(f"{where}: missing field '{cols['response']}' (the response column)")
        return {"prompt": prompt, "response": _text(row[cols["response"]], where, cols["response"]),
                "source": row.get("source")}
    chosen_col, rejected_col = cols.get("chosen", "chosen"), cols.get("rejected", "rejected")
    if isinstance(row.get(chosen_col), str) and isinstance(row.get(rejected_col), str):
        chosen, rejected = row[chosen_col], row[rejected_col]
    else:
        output = row.get(cols["response"])
        if not (isinstance(output, list) and len(output) == 2 and all(isinstance(o, str) for o in output)):
            raise DataError(f"{where}: a ranking row needs string fields '{chosen_col}' and "
                            f"'{rejected_col}', or '{cols['response']}' as [chosen, rejected]")
        chosen, rejected = output
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "meta": row.get("meta")}


def _sharegpt_turns(turns: Any, tags: dict[str, str], where: str, field: str) -> list[tuple[str, str]]:
    if not isinstance(turns, list):
        raise DataError(f"{where}: field '{field}' must be a list of turns")
    out = []
    for t in turns:
        if not isinstance(t, dict) or tags["role_tag"] not in t or tags["content_tag"] not in t:
            raise DataError(f"{where}: each turn in '{field}' needs '{tags['role_tag']}' and "
                            f"'{tags['content_tag']}'")
        out.append((t[tags["role_tag"]], _text(t[tags["content_tag"]], where, field)))
    return out


def _sharegpt_record(row: dict[str, Any], cols: dict[str, str], tags: dict[str, str], ranking: bool,
                     where: str) -> dict[str, Any]:
    field = cols["messages"]
    turns = _sharegpt_turns(row.get(field), tags, where, field)
    system = ([_text(row[cols["system"]], where, cols["system"])]
              if cols.get("system") and row.get(cols["system"]) else [])
    if ranking:
        if not turns or turns[-1][0] == tags["assistant_tag"]:
            raise DataError(f"{where}: a ranking conversation must end with a '{tags['user_tag']}' turn")
        picked = []
        for name in ("chosen", "rejected"):
            col = cols.get(name, name)
            got = _sharegpt_turns([row.get(col)], tags, where, col)[0]
            picked.append(got[1])
        return {"prompt": flatten_turns(system + [c for _, c in turns]), "chosen": picked[0],
                "rejected": picked[1], "meta": row.get("meta")}
    if len(turns) < 2 or turns[-1][0] != tags["assistant_tag"]:
        raise DataError(f"{where}: field '{field}' must end with a '{tags['assistant_tag']}' turn")
    return {"prompt": flatten_turns(system + [c for _, c in turns[:-1]]), "response": turns[-1][1],
            "source": row.get("source")}


def import_llamafactory(dataset_dir: str | Path, names: list[str] | None = None) -> dict[str, pa.Table]:
    """Read LLaMA-Factory datasets (``dataset_info.json`` + files) as ``sft``/``pairs`` tables.

    ``names`` picks entries (default: every entry with a local ``file_name``). Entries whose
    data lives on a hub are skipped unless asked for by name, which is an error.
    """
    root = Path(dataset_dir)
    info_path = root / DATASET_INFO
    if not info_path.is_file():
        raise DataError(f"{info_path}: file not found")
    info = read_json_object(info_path)
    wanted = names if names is not None else [n for n, e in info.items()
                                              if isinstance(e, dict) and e.get("file_name")]
    out: dict[str, pa.Table] = {}
    for name in wanted:
        entry = info.get(name)
        if not isinstance(entry, dict):
            raise DataError(f"{info_path}: no dataset entry '{name}' (have: {', '.join(info)})")
        if not entry.get("file_name"):
            raise DataError(f"{info_path}: entry '{name}' has no local 'file_name'")
        out[name] = _import_entry(root, name, entry)
    if not out:
        raise DataError(f"{info_path}: no local dataset entries")
    return out


def _import_entry(root: Path, name: str, entry: dict[str, Any]) -> pa.Table:
    path = root / entry["file_name"]
    formatting = entry.get("formatting", "alpaca")
    ranking = bool(entry.get("ranking", False))
    cols = dict(entry.get("columns") or {})
    records = read_records(path)
    if formatting == "alpaca":
        cols = {**_ALPACA_DEFAULTS, **cols}
        rows = [_alpaca_record(r, cols, ranking, _where(path, n)) for n, r in records]
    elif formatting == "sharegpt":
        cols = {**_SHAREGPT_COLUMNS, **cols}
        tags = {**_SHAREGPT_TAGS, **(entry.get("tags") or {})}
        rows = [_sharegpt_record(r, cols, tags, ranking, _where(path, n)) for n, r in records]
    else:
        raise DataError(f"{root / DATASET_INFO}: entry '{name}': unknown formatting {formatting!r} "
                        "(expected alpaca or sharegpt)")
    return conform(rows, "pairs" if ranking else "sft")


# ------------------------------------------------------------------------------------------
# OpenAI messages <-> sft
# ------------------------------------------------------------------------------------------


def _check_messages(messages: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field 'messages' must be a non-empty list")
    for m in messages:
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise DataError(f"{where}: each message needs string 'role' and 'content'")
    return messages


def export_openai_messages(table: pa.Table, path: str | Path) -> Path:
    """Write an ``sft`` table as OpenAI chat JSONL: one user and one assistant message per row."""
    rows = conform(table, "sft").to_pylist()
    atomic_write_jsonl(path, [{"messages": [{"role": "user", "content": r["prompt"]},
                                            {"role": "assistant", "content": r["response"]}]}
                              for r in rows])
    return Path(path)


def import_openai_messages(path: str | Path, source: str | None = None) -> pa.Table:
    """Read OpenAI chat JSONL as an ``sft`` table: the last assistant message is the response."""
    p = Path(path)
    rows = []
    for n, rec in read_records(p):
        where = _where(p, n)
        messages = _check_messages(rec.get("messages"), where)
        if messages[-1]["role"] != "assistant" or len(messages) < 2:
            raise DataError(f"{where}: 'messages' must end with an assistant message after a prompt")
        rows.append({"prompt": flatten_turns([m["content"] for m in messages[:-1]]),
                     "response": messages[-1]["content"], "source": source})
    return conform(rows, "sft")


# ------------------------------------------------------------------------------------------
# LLM2 verifier JSONL <-> token_pairs
# ------------------------------------------------------------------------------------------


def _check_samples(samples: Any, where: str) -> list[list[int]]:
    """``samples`` as a list of ``[position, gt_id, neg_id]`` non-negative ints (shape only)."""
    if not isinstance(samples, list):
        raise DataError(f"{where}: field 'samples' must be a list of [position, gt_token_id, neg_token_id]")
    for k, s in enumerate(samples):
        if not (isinstance(s, list) and len(s) == 3
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in s)):
            raise DataError(f"{where}: each sample must be [position, gt_token_id, neg_token_id] "
                            f"of non-negative ints; triple {k} is {s!r}")
    return samples


def _check_against_ids(samples: list[list[int]], ids: list[int], tokenizer: Any,
                       where: str) -> None:
    """Every triple's position lies in ``ids``, ``ids[pos] == gt`` and ``neg`` is a token id."""
    vocab = len(tokenizer)
    for k, (pos, gt, neg) in enumerate(samples):
        head = f"{where}: triple {k} [{pos}, {gt}, {neg}]"
        if pos >= len(ids):
            raise DataError(f"{head}: position {pos} is beyond the sequence (the messages render "
                            f"to {len(ids)} tokens with this tokenizer's chat template)")
        if ids[pos] != gt:
            found = tokenizer.convert_ids_to_tokens(ids[pos])
            raise DataError(f"{head}: the token at position {pos} is {ids[pos]} ({found!r}), not "
                            f"gt_id {gt} (was the file made with another tokenizer or chat "
                            f"template?)")
        if neg >= vocab:
            raise DataError(f"{head}: neg_id {neg} is not a token id of this tokenizer "
                            f"(0..{vocab - 1})")


def export_llm2_jsonl(table: pa.Table, path: str | Path) -> Path:
    """Write a ``token_pairs`` table as the LLM2 verifier JSONL (messages as a list).

    Written to a temp file and renamed into place: ``path`` is complete or untouched.
    """
    rows = conform(table, "token_pairs").to_pylist()
    # "render" only for text-rendered rows: chat rows stay exactly the authors' layout.
    atomic_write_jsonl(path, [{"messages": json.loads(r["messages"]), "samples": r["samples"],
                               **({"render": r["render"]} if r.get("render") not in (None, "chat")
                                  else {})}
                              for r in rows])
    return Path(path)


def import_llm2_jsonl(path: str | Path, tokenizer: Any = None,
                      max_len: int | None = None) -> pa.Table:
    """Read the LLM2 verifier JSONL as a ``token_pairs`` table (messages kept as JSON text).

    With ``tokenizer`` each row's messages are rendered by
    :func:`raysys.training.collators.render_pair_ids` (the chat template, or ``"render": "text"``
    as raysys exports text-rendered rows) and
    every triple is checked: position inside the sequence, ``ids[pos] == gt_id``, ``neg_id`` a
    token id. A failure is one ``DataError`` naming ``file:line: triple k [pos, gt, neg]`` and
    what was found; nothing is returned. ``max_len`` then drops triples at positions
    ``>= max_len`` (as the authors' trainer does; rows are kept, possibly with no triple).
    """
    if max_len is not None and max_len < 1:
        raise ValueError(f"max_len: expected a positive int, got {max_len}")
    if tokenizer is not None:
        from raysys.training.collators import render_pair_ids   # torch only when checking
    p = Path(path)
    rows = []
    for n, rec in read_records(p):
        where = _where(p, n)
        messages = _check_messages(rec.get("messages"), where)
        samples = _check_samples(rec.get("samples"), where)
        render = rec.get("render")
        if render is not None and render not in RENDERS:
            raise DataError(f"{where}: field 'render' must be 'chat' or 'text', got {render!r}")
        if tokenizer is not None:
            _check_against_ids(samples, render_pair_ids(messages, tokenizer, render), tokenizer,
                               where)
        if max_len is not None:
            samples = [s for s in samples if s[0] < max_len]
        rows.append({"messages": json.dumps(messages, ensure_ascii=False), "samples": samples,
                     "render": render})
    return conform(rows, "token_pairs")
