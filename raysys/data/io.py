"""File I/O at the edges, one import for every command and stage: reading input files with
precise errors (:mod:`raysys.data.reading`), atomic writes (:mod:`raysys.data.atomic`), stage
directories (:mod:`raysys.data.stage_dir`) and output paths checked before any work
(:mod:`raysys.data.output_paths`). Everything is re-exported here.

A stage directory holds ``part-*.parquet`` files and, last, ``_MANIFEST.json`` (rows, schema,
per-part checksums). Each part is written atomically (temp file + rename), so a killed writer
leaves either a whole part or none; the stage is complete only when the manifest exists.
"""

from __future__ import annotations

from raysys.data.atomic import (atomic_write_bytes, atomic_write_json,  # noqa: F401
                                atomic_write_jsonl, atomic_write_parquet, atomic_write_text,
                                replace_dir_atomic)
from raysys.data.output_paths import (alias_relation, check_not_an_input,  # noqa: F401
                                      check_output_dir, check_output_file)
from raysys.data.reading import (MAX_JSON_DEPTH, MAX_JSON_FILE_BYTES,  # noqa: F401
                                 MAX_JSON_INT_DIGITS, MAX_JSONL_LINE_BYTES, iter_jsonl,
                                 json_depth, parse_json_bounded, read_json, read_json_object,
                                 read_parquet_any, read_records, read_text)
from raysys.data.stage_dir import (MANIFEST, is_complete, read_manifest,  # noqa: F401
                                   read_stage, verify_stage, write_manifest, write_part,
                                   write_stage)
from raysys.errors import DataError  # noqa: F401 - re-exported: defined with every user error
