"""The data contract between stages: one Arrow schema per stage table, declared once here.

Every stage reads and writes these tables (parquet on disk, Ray Datasets in flight).
``conform`` is the one gate into a table: it checks required columns and types and fills
nullable optional columns, so a stage never writes a table with a drifting schema.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from raysys.errors import SchemaError  # noqa: F401 - re-exported: defined with every user error

PROBLEMS = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("question", pa.string(), nullable=False),
    pa.field("gold_answer", pa.string()),
    pa.field("gold_solution", pa.string()),
    pa.field("meta", pa.string()),            # JSON object as a string
])

SAMPLES = pa.schema([
    pa.field("problem_id", pa.string(), nullable=False),
    pa.field("sample_idx", pa.int32(), nullable=False),
    pa.field("prompt", pa.string(), nullable=False),
    pa.field("completion", pa.string(), nullable=False),
    pa.field("pred", pa.string()),            # extracted final answer ("" when none)
    pa.field("correct", pa.bool_()),          # null when no gold answer
    pa.field("model", pa.string()),
    pa.field("iteration", pa.int32()),
    pa.field("num_tokens", pa.int32()),
    pa.field("cumulative_logprob", pa.float64()),
    pa.field("finish_reason", pa.string()),
])

CRITIQUES = pa.schema([
    pa.field("problem_id", pa.string(), nullable=False),
    pa.field("sample_idx", pa.int32(), nullable=False),
    pa.field("critique", pa.string(), nullable=False),
    pa.field("verdict", pa.string()),
    pa.field("refined", pa.string()),
    pa.field("refined_pred", pa.string()),
    pa.field("refined_correct", pa.bool_()),
    pa.field("steps", pa.string()),           # JSON list of per-step verdicts (true/false/null)
    pa.field("first_wrong_step", pa.int32()), # 1-based; null when no step is wrong
    pa.field("refine_idx", pa.int32()),       # which refinement of this critique (null: none)
    pa.field("round", pa.int32()),            # test-time critique -> refine round (null: train)
    pa.field("num_tokens", pa.int32()),       # tokens generated for this row's critique/refinement
])

SFT = pa.schema([
    pa.field("prompt", pa.string(), nullable=False),
    pa.field("response", pa.string(), nullable=False),
    pa.field("source", pa.string()),
])

PAIRS = pa.schema([
    pa.field("prompt", pa.string(), nullable=False),
    pa.field("chosen", pa.string(), nullable=False),
    pa.field("rejected", pa.string(), nullable=False),
    pa.field("meta", pa.string()),            # JSON; DPO adds ref_chosen_logp / ref_rejected_logp
])

TOKEN_PAIRS = pa.schema([
    pa.field("messages", pa.string(), nullable=False),   # JSON list of {role, content}
    pa.field("samples", pa.list_(pa.list_(pa.int64())), nullable=False),  # [position, gt, neg]
    pa.field("source", pa.string()),          # the problem (or row) the pairs were explored on
    # How messages become the token ids positions index into: "chat" (null: the authors'
    # files) = the chat template; "text" = [prompt, response] as SFT tokenizes them.
    pa.field("render", pa.string()),
])
RENDERS = ("chat", "text")    # token_pairs.render values (null reads as chat)

SCHEMAS: dict[str, pa.Schema] = {
    "problems": PROBLEMS,
    "samples": SAMPLES,
    "critiques": CRITIQUES,
    "sft": SFT,
    "pairs": PAIRS,
    "token_pairs": TOKEN_PAIRS,
}


def conform(table: pa.Table | list[dict[str, Any]], kind: str) -> pa.Table:
    """Return ``table`` (or rows) as a table with exactly the ``kind`` schema.

    Missing nullable columns are filled with nulls; a missing non-nullable column, or a value
    of the wrong type, raises :class:`SchemaError` naming the column.
    """
    schema = SCHEMAS[kind]
    if isinstance(table, list):
        cols: dict[str, list] = {f.name: [] for f in schema}
        for i, row in enumerate(table):
            for f in schema:
                if f.name not in row and not f.nullable:
                    raise SchemaError(f"{kind} row {i}: missing required column '{f.name}'")
                cols[f.name].append(row.get(f.name))
        arrays = []
        for f in schema:
            try:
                arrays.append(pa.array(cols[f.name], type=f.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                raise SchemaError(f"{kind}.{f.name}: expected {f.type}: {e}") from None
        return pa.Table.from_arrays(arrays, schema=schema)
    arrays = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            if col.type != f.type:
                try:
                    col = col.cast(f.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                    raise SchemaError(f"{kind}.{f.name}: expected {f.type}, got {col.type}: {e}") from None
            arrays.append(col)
        elif f.nullable:
            arrays.append(pa.nulls(table.num_rows, type=f.type))
        else:
            raise SchemaError(f"{kind}: missing required column '{f.name}'")
    return pa.Table.from_arrays(arrays, schema=schema)
