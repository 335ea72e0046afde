"""The hostile-input table for ``tests/cli/test_hostile_inputs.py``: each case is a command line,
the files it finds, and the one-line error it must end with (exit 2, nothing written).

Placeholders in argv: ``{model}`` the session's tiny model dir, ``{cfg}`` the quick demo config,
``{port}`` a closed local port. Paths are relative to the case's empty working directory; ``env``
values may name it as ``{root}`` (``HOME`` for ``~`` paths).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

BINARY = bytes(range(256)) * 4                                # NUL bytes, 0xff: not text
LATIN1_JSONL = b'{"question": "ok", "answer": "#### 1"}\n{"question": "caf\xe9", "answer": "#### 2"}\n'
GSM8K_OK = '{"question": "1+1?", "answer": "so\\n#### 2"}\n'
SFT_OK = '{"prompt": "1+1?", "response": "2"}\n'
GRADE_OK = '{"pred": "2", "gold": "2"}\n'
Files = dict[str, "bytes | str | Callable[[Path, Path], None]"]


@dataclass
class Case:
    """One hostile input: ``argv`` after ``raysys``, the files it finds, the error it must print."""

    category: str
    id: str
    argv: list[str]
    error: str                                  # regex searched in the one stderr line
    files: Files = field(default_factory=dict)
    xfail: str | None = None                    # a fix needed in a file this task does not own
    env: dict[str, str] = field(default_factory=dict)   # set for the case; {root}: its directory


# -- builders for files that are not plain content -------------------------------------------


def _parquet(rows: list[dict]) -> Callable[[Path, Path], None]:
    def build(path: Path, model: Path) -> None:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return build


def _model_copy(edit: Callable[[Path], None] | None = None,
                keep: tuple[str, ...] | None = None) -> Callable[[Path, Path], None]:
    """A copy of the tiny model dir (only ``keep`` files when given), then ``edit(dir)``."""
    def build(path: Path, model: Path) -> None:
        path.mkdir(parents=True)
        for f in model.iterdir():
            if keep is None or f.name in keep:
                shutil.copy(f, path / f.name)
        if edit is not None:
            edit(path)
    return build


def _truncate(d: Path) -> None:
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _auto_map(d: Path) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (d / "config.json").write_text(json.dumps(cfg))


def _garbage_weights(d: Path) -> None:
    (d / "model.safetensors").write_bytes(BINARY)


def _symlink(target: str) -> Callable[[Path, Path], None]:
    """A symlink to ``target`` (relative to the link's dir; it may not exist yet)."""
    def build(path: Path, model: Path) -> None:
        path.symlink_to(target)
    return build


def _hardlink(target: str) -> Callable[[Path, Path], None]:
    """A hard link to ``target`` (relative to the link's dir; written before this entry)."""
    def build(path: Path, model: Path) -> None:
        path.hardlink_to(path.parent / target)
    return build


def _drop(*names: str) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        for name in names:
            (d / name).unlink()
    return edit


def _config(**changes: object) -> Callable[[Path], None]:
    """Set keys of the copy's config.json."""
    def edit(d: Path) -> None:
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(changes)
        (d / "config.json").write_text(json.dumps(cfg))
    return edit


def _extra_token_id(token_id: int) -> Callable[[Path], None]:
    """An added token with id ``token_id`` in the copy's tokenizer.json (past vocab_size 512)."""
    def edit(d: Path) -> None:
        tok = json.loads((d / "tokenizer.json").read_text())
        tok["added_tokens"].append({"id": token_id, "content": "<|extra|>", "single_word": False,
                                    "lstrip": False, "rstrip": False, "normalized": False,
                                    "special": True})
        (d / "tokenizer.json").write_text(json.dumps(tok))
    return edit


def _verifier_head_only(path: Path, model: Path) -> None:
    """A verifier dir with its head and config but no backbone (config.json, weights)."""
    path.mkdir(parents=True)
    shutil.copy(model / "model.safetensors", path / "verifier_head.safetensors")
    (path / "verifier_config.json").write_text('{"kind": "token_verifier", "hidden_size": 128}')


NO_TOKENIZER = _model_copy(_drop("tokenizer.json"))
BROKEN_TOKENIZER = _model_copy(lambda d: (d / "tokenizer.json").write_text('{"model": '))
UNKNOWN_TYPE = _model_copy(_config(model_type="frobnicator"))
KV_HEADS = _model_copy(_config(num_key_value_heads=3))
HIDDEN_MISMATCH = _model_copy(_config(hidden_size=130))
LAYERS_MISSING = _model_copy(_config(num_hidden_layers=4))
TOKENIZER_PAST_VOCAB = _model_copy(_extra_token_id(600))
OLYMPIAD_OK = '{"id": 1, "problem": "1+1?", "answer": ["2"], "answer_type": "NV"}\n'
def _billion_laughs() -> str:
    lines = ["recipe: weak_to_strong", "a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def _long_line(path: Path, model: Path) -> None:
    """A JSONL file whose second line is one byte over the 32 MiB row bound."""
    with path.open("wb") as f:
        f.write(GSM8K_OK.encode())
        head = b'{"question": "q", "answer": "#### 1", "pad": "'
        f.write(head + b"x" * (32 * 1024 * 1024 - len(head) - 1) + b'"}\n')


DEEP = "[" * 100_000 + "]" * 100_000


def _complete_stage(edit: Callable[[Path], None] | None = None) -> Callable[[Path, Path], None]:
    """A complete ``sft`` stage (one part, its manifest with the checksum), then ``edit(dir)``."""
    def build(path: Path, model: Path) -> None:
        from raysys.data.io import write_manifest, write_part

        write_part(path, "00000", [{"prompt": "q", "response": "a", "source": "t"}], "sft")
        write_manifest(path, "sft")
        if edit is not None:
            edit(path)
    return build


def _flip_last_byte(d: Path) -> None:
    f = d / "part-00000.parquet"
    data = bytearray(f.read_bytes())
    data[-20] ^= 0xFF
    f.write_bytes(bytes(data))


def _state(pid: int = 4242, **stages: dict) -> str:
    runs = [{"start": "2026-12-07T10:00:00Z", "end": "2026-12-07T10:05:00Z", "seconds": 300.0,
             "pid": pid, "host": "box"}]
    return json.dumps({"stages": {k.replace("__", "/"): v for k, v in stages.items()}, "runs": runs})


def _result(*rows: dict, **extra: object) -> str:
    return json.dumps({"method": "llm2", "evals": list(rows) or
                       [{"model": "plain", "correct": 1, "n": 2, "outcomes": {"p0": True, "p1": False}},
                        {"model": "guided", "correct": 2, "n": 2, "outcomes": {"p0": True, "p1": True}}],
                       **extra})


def _hard_rows(path: Path, model: Path) -> None:
    """100 rows that only sympy can decide (no fast string or number answer)."""
    path.write_text("".join(json.dumps({"pred": f"\\boxed{{x^{i % 7 + 2}+{i}x+1}}", "gold": f"(x+{i})^2"})
                            + "\n" for i in range(100)))


HOME = {"HOME": "{root}/home"}
DUP_IDS = '{"id": 7, "question": "1+1?", "answer": "so\\n#### 2"}\n{"id": 7, "question": "2+2?", "answer": "#### 4"}\n'
COMPLETE = {"status": "complete", "seconds": 1.5, "rows": 1}
STATE_STAGE = _state(iter_0__s=COMPLETE)
ROW_A = {"model": "a", "correct": 1, "n": 2}
DEMO_CFG = Path(__file__).resolve().parents[2] / "configs" / "demo_quick.yaml"
LLM2_CFG = DEMO_CFG.parent / "llm2_demo_quick.yaml"
CRITIQUE_CFG = DEMO_CFG.parent / "critique_demo_quick.yaml"
ONLY_CONFIG = _model_copy(keep=("config.json",))
ADAPTER_CONFIG_ONLY = {"adp/adapter_config.json": json.dumps({"peft_type": "LORA", "r": 8})}
W = ["--run-dir", "r"]                          # a fresh run dir for `run` cases
EVAL = ["eval", "--model", "{model}", "--out", "o"]
TRAIN = ["train", "--kind", "sft", "--model", "{model}", "--out", "o"]
PREP = ["data", "prepare", "synthetic", "--option", "n=3"]

CASES: list[Case] = [
    # -- files that are not text ----------------------------------------------------------
    Case("not text", "prepare-binary-jsonl", ["data", "prepare", "gsm8k", "--input", "b.jsonl", "--out", "o.parquet"],
         r"b\.jsonl:1: binary data .*expected UTF-8", {"b.jsonl": BINARY}),
    Case("not text", "prepare-latin1-line2", ["data", "prepare", "gsm8k", "--input", "l.jsonl", "--out", "o.jsonl"],
         r"l\.jsonl:2: not UTF-8 text \(byte 0xe9", {"l.jsonl": LATIN1_JSONL}),
    Case("not text", "prepare-binary-json", ["data", "prepare", "gsm8k", "--input", "b.json", "--out", "o.parquet"],
         r"b\.json:\d+: a binary file", {"b.json": BINARY}),
    Case("not text", "prepare-garbage-parquet", ["data", "prepare", "gsm8k", "--input", "g.parquet", "--out", "o.parquet"],
         r"g\.parquet: not a readable parquet file", {"g.parquet": BINARY}),
    Case("not text", "prepare-dir-with-binary", ["data", "prepare", "gsm8k", "--input", "d", "--out", "o.parquet"],
         r"d/x\.jsonl:1: binary data", {"d/x.jsonl": BINARY}),
    Case("not text", "show-binary-jsonl", ["data", "show", "b.jsonl"], r"b\.jsonl:1: binary data", {"b.jsonl": BINARY}),
    Case("not text", "show-garbage-parquet", ["data", "show", "g.parquet"], r"g\.parquet: not a readable parquet",
         {"g.parquet": BINARY}),
    Case("not text", "show-stage-garbage-part", ["data", "show", "st"], r"part-00000\.parquet: not a readable parquet",
         {"st/part-00000.parquet": BINARY}),
    Case("not text", "grade-binary", ["grade", "b.jsonl", "--out", "o.jsonl"], r"b\.jsonl:1: binary data",
         {"b.jsonl": BINARY}),
    Case("not text", "grade-latin1", ["grade", "l.jsonl", "--out", "o.jsonl"], r"l\.jsonl:2: not UTF-8 text",
         {"l.jsonl": LATIN1_JSONL}),
    Case("not text", "config-show-binary", ["config", "show", "b.yaml"], r"b\.yaml:1: a binary file",
         {"b.yaml": BINARY}),
    Case("not text", "config-show-latin1-line3", ["config", "show", "l.yaml"], r"l\.yaml:3: not UTF-8 text",
         {"l.yaml": b"recipe: weak_to_strong\nseed: 0\nrun_dir: caf\xe9\n"}),
    Case("not text", "config-show-nul", ["config", "show", "n.yaml"], r"n\.yaml:1: a binary file \(byte 0x00",
         {"n.yaml": "recipe: weak\0\n"}),
    Case("not text", "run-binary-config", ["run", "b.yaml"], r"b\.yaml:1: a binary file", {"b.yaml": BINARY}),
    Case("not text", "train-binary-data", [*TRAIN, "--data", "b.jsonl"], r"b\.jsonl:1: binary data",
         {"b.jsonl": BINARY}),
    Case("not text", "train-binary-config", ["train", "--config", "b.yaml"], r"b\.yaml:1: a binary file",
         {"b.yaml": BINARY}),
    Case("not text", "tiny-binary-corpus", ["models", "tiny", "--corpus", "c.txt", "--out", "m"],
         r"c\.txt:1: a binary file .*expected a UTF-8 text corpus", {"c.txt": BINARY}),
    Case("not text", "eval-binary-data", [*EVAL, "--data", "gsm8k:b.jsonl"], r"b\.jsonl:1: binary data",
         {"b.jsonl": BINARY}),
    # -- outputs that cannot be written -----------------------------------------------------
    Case("outputs", "prepare-under-file", [*PREP, "--out", "f/x.parquet"], r"--out: cannot create .*: .*f is a file",
         {"f": "x"}),
    Case("outputs", "prepare-file-is-dir", [*PREP, "--out", "d.parquet"], r"--out: d\.parquet is a directory",
         {"d.parquet/keep": "x"}),
    Case("outputs", "prepare-csv-suffix", [*PREP, "--out", "x.csv"], r"--out: x\.csv: expected a \.parquet or \.jsonl"),
    Case("outputs", "prepare-unrelated-dir", [*PREP, "--out", "notes"], r"--out: notes is a non-empty directory that "
         r"is not a raysys output", {"notes/todo.txt": "mine"}),
    Case("outputs", "prepare-dir-is-file", [*PREP, "--out", "f"], r"--out: f is a file; expected a directory",
         {"f": "x"}),
    Case("outputs", "prepare-stage-under-file", [*PREP, "--out", "f/stage"], r"--out: cannot create .*f is a file",
         {"f": "x"}),
    Case("outputs", "grade-under-file", ["grade", "in.jsonl", "--out", "f/o.jsonl"], r"--out: cannot create .*f is a file",
         {"in.jsonl": GRADE_OK, "f": "x"}),
    Case("outputs", "grade-out-is-dir", ["grade", "in.jsonl", "--out", "d"], r"--out: .*'d' is a directory",
         {"in.jsonl": GRADE_OK, "d/keep": "x"}),
    Case("outputs", "run-tiny-cache-is-file", ["run", "{cfg}", *W, "--set", "tiny_cache=f"],
         r"tiny_cache: f is a file; expected a directory", {"f": "x"}),
    Case("outputs", "run-tiny-cache-under-file", ["run", "{cfg}", *W, "--set", "tiny_cache=f/c"],
         r"tiny_cache: cannot create .*f is a file", {"f": "x"}),
    Case("outputs", "run-tiny-cache-unrelated", ["run", "{cfg}", *W, "--set", "tiny_cache=notes"],
         r"tiny_cache: notes is a non-empty directory that is not a raysys output",
         {"notes/todo.txt": "mine"}),
    Case("outputs", "run-dir-is-file", ["run", "{cfg}", "--run-dir", "f"], r"run_dir: f is a file; expected a directory",
         {"f": "x"}),
    Case("outputs", "run-dir-under-file", ["run", "{cfg}", "--run-dir", "f/r"], r"run_dir: cannot create .*f is a file",
         {"f": "x"}),
    Case("outputs", "run-dir-unrelated", ["run", "{cfg}", "--run-dir", "notes"], r"run_dir: notes is a non-empty "
         r"directory that is not a raysys output", {"notes/todo.txt": "mine"}),
    Case("outputs", "tiny-under-file", ["models", "tiny", "--out", "f/m"], r"--out: cannot create .*f is a file",
         {"f": "x"}),
    Case("outputs", "tiny-replaces-unrelated", ["models", "tiny", "--out", "notes"], r"--out: notes is a non-empty "
         r"directory that is not a raysys output", {"notes/todo.txt": "mine"}),
    Case("outputs", "tiny-out-is-file", ["models", "tiny", "--out", "f"], r"--out: .*'f' is a file", {"f": "x"}),
    Case("outputs", "eval-out-is-file", ["eval", "--model", "{model}", "--data", "gsm8k:t.jsonl", "--out", "f"],
         r"out: f is a file", {"t.jsonl": GSM8K_OK, "f": "x"}),
    Case("outputs", "train-out-under-file", ["train", "--kind", "sft", "--model", "{model}", "--data", "s.jsonl",
                                             "--out", "f/m"], r"out: cannot create .*f is a file",
         {"s.jsonl": SFT_OK, "f": "x"}),
    # -- an output that is, contains or lies inside one of the inputs --------------------------
    # (a copy of the model, never the session's: a regression here would delete its weights)
    Case("output-is-input", "train-out-is-model", ["train", "--kind", "sft", "--model", "mc", "--data", "s.jsonl",
                                                   "--out", "mc"],
         r"--out: mc \(.*/mc\) is the same directory as --model \(.*/mc\); an output may never be, contain "
         r"or lie inside an input.*choose another --out", {"mc": _model_copy(), "s.jsonl": SFT_OK}),
    Case("output-is-input", "train-out-inside-model", ["train", "--kind", "sft", "--model", "mc", "--data",
                                                       "s.jsonl", "--out", "mc/adapter"],
         r"--out: mc/adapter .*lies inside --model", {"mc": _model_copy(), "s.jsonl": SFT_OK}),
    Case("output-is-input", "train-out-symlink-to-model", ["train", "--kind", "sft", "--model", "mc", "--data",
                                                           "s.jsonl", "--out", "link"],
         r"--out: link \(.*/mc\) is the same directory as --model",
         {"mc": _model_copy(), "s.jsonl": SFT_OK, "link": _symlink("mc")}),
    Case("output-is-input", "train-out-dotdot-model", ["train", "--kind", "sft", "--model", "mc", "--data",
                                                       "s.jsonl", "--out", "x/../mc"],
         r"--out: x/\.\./mc .*is the same directory as --model", {"mc": _model_copy(), "s.jsonl": SFT_OK}),
    Case("output-is-input", "train-out-contains-data", ["train", "--kind", "sft", "--model", "{model}", "--data",
                                                        "d/s.jsonl", "--out", "d"],
         r"--out: d .*is a directory that contains --data \(.*d/s\.jsonl\)", {"d/s.jsonl": SFT_OK}),
    Case("output-is-input", "train-run-dir-is-model", ["train", "--kind", "sft", "--model", "mc", "--data",
                                                       "s.jsonl", "--out", "o", "--run-dir", "mc"],
         r"--run-dir: mc .*is the same directory as --model", {"mc": _model_copy(), "s.jsonl": SFT_OK}),
    Case("output-is-input", "train-default-ray-train-dir-is-model", ["train", "--kind", "sft", "--model",
                                                                     "ray_train", "--data", "s.jsonl", "--out", "o"],
         r"--run-dir \(default: <out>/\.\./ray_train\): .*/ray_train is the same directory as --model",
         {"ray_train": _model_copy(), "s.jsonl": SFT_OK}),
    Case("output-is-input", "train-config-out-is-model", ["train", "--config", "t.yaml"],
         r"^error: out: \./mc/ \(.*/mc\) is the same directory as model \(.*writing it would overwrite "
         r"the input", {"mc": _model_copy(), "s.jsonl": SFT_OK,
                                                                  "t.yaml": "kind: sft\nmodel: mc\ndata: s.jsonl\n"
                                                                            "out: ./mc/\n"}),
    Case("output-is-input", "prepare-out-is-input", ["data", "prepare", "gsm8k", "--input", "g.jsonl", "--out",
                                                     "g.jsonl"],
         r"--out: g\.jsonl .*is the same file as --input", {"g.jsonl": GSM8K_OK}),
    Case("output-is-input", "prepare-out-symlink-to-input", ["data", "prepare", "gsm8k", "--input", "g.jsonl",
                                                             "--out", "l.jsonl"],
         r"--out: l\.jsonl \(.*/g\.jsonl\) is the same file as --input",
         {"g.jsonl": GSM8K_OK, "l.jsonl": _symlink("g.jsonl")}),
    Case("output-is-input", "prepare-out-under-symlinked-dir", ["data", "prepare", "jsonl", "--input", "d",
                                                                "--out", "dl/new.parquet"],
         r"--out: dl/new\.parquet \(.*/d/new\.parquet\) lies inside --input",
         {"d/p.jsonl": '{"question": "q", "gold_answer": "1"}\n', "dl": _symlink("d")}),
    Case("output-is-input", "prepare-stage-out-is-input-stage", ["data", "prepare", "jsonl", "--input", "st",
                                                                 "--out", "st"],
         r"--out: st .*is the same directory as --input",
         {"st/part-00000.parquet": _parquet([{"question": "q", "gold_answer": "1"}])}),
    Case("output-is-input", "prepare-stage-out-is-parent-of-input", ["data", "prepare", "jsonl", "--input",
                                                                     "st/part-00000.parquet", "--out", "st"],
         r"--out: st .*is a directory that contains --input",
         {"st/part-00000.parquet": _parquet([{"question": "q", "gold_answer": "1"}])}),
    Case("output-is-input", "grade-out-is-input", ["grade", "in.jsonl", "--out", "./in.jsonl"],
         r"--out: \./in\.jsonl .*is the same file as IN\.jsonl", {"in.jsonl": GRADE_OK}),
    Case("output-is-input", "grade-out-hard-link-to-input", ["grade", "in.jsonl", "--out", "h.jsonl"],
         r"--out: h\.jsonl .*is the same file as IN\.jsonl", {"in.jsonl": GRADE_OK, "h.jsonl": _hardlink("in.jsonl")}),
    Case("output-is-input", "eval-out-contains-data", ["eval", "--model", "{model}", "--data", "gsm8k:o/t.jsonl",
                                                       "--out", "o"],
         r"--out: o .*is a directory that contains --data \(.*o/t\.jsonl\)", {"o/t.jsonl": GSM8K_OK}),
    Case("output-is-input", "eval-out-is-data-file", ["eval", "--model", "{model}", "--data", "gsm8k:t.jsonl",
                                                      "--out", "t.jsonl"],
         r"--out: t\.jsonl .*is the same file as --data", {"t.jsonl": GSM8K_OK}),
    Case("output-is-input", "sample-out-inside-model", ["sample", "--model", "mc", "--data", "gsm8k:t.jsonl",
                                                        "--out", "mc/samples"],
         r"--out: mc/samples .*lies inside --model", {"mc": _model_copy(), "t.jsonl": GSM8K_OK}),
    Case("output-is-input", "run-dir-inside-model", ["run", "{cfg}", "--run-dir", "mc/run", "--set",
                                                     "models.weak.path=./mc"],
         r"run_dir: mc/run \(.*\) lies inside models\.weak\.path \(.*/mc\); .*writing into it would "
         r"change the input", {"mc": _model_copy()}),
    Case("output-is-input", "run-dir-replaces-weak-labels-dir", ["run", "{cfg}", "--run-dir", "d", "--set",
                                                                 "data.weak_outputs=d/w.jsonl"],
         r"run_dir: d \(.*\) is a directory that contains data\.weak_outputs \(.*d/w\.jsonl\); .*replacing "
         r"it would delete the input",
         {"d/w.jsonl": '{"id": "1", "prompt": "q", "response": "a"}\n'}),
    Case("output-is-input", "run-tiny-cache-is-model", ["run", "{cfg}", *W, "--set", "tiny_cache=mc",
                                                        "--set", "models.weak.path=./mc"],
         r"tiny_cache: mc .*is the same directory as models\.weak\.path", {"mc": _model_copy()}),
    Case("output-is-input", "run-dir-contains-its-config", ["run", "c/my.yaml", "--run-dir", "c"],
         r"run_dir: c \(.*\) is a directory that contains CONFIG \(.*c/my\.yaml\)",
         {"c/my.yaml": lambda path, model: path.write_text(DEMO_CFG.read_text())}),
    Case("output-is-input", "demo-run-dir-inside-model", ["demo", "--quick", "--run-dir", "mc/demo", "--set",
                                                          "models.weak.path=./mc"],
         r"run_dir: mc/demo \(.*\) lies inside models\.weak\.path", {"mc": _model_copy()}),
    Case("output-is-input", "report-figure-sidecar-over-result", ["report", "r"],
         r"figures/result\.json: .* is the same file as result\.json",
         {"r/result.json": json.dumps({"method": "result", "evals": [{"model": "a", "correct": 1, "n": 2}]}),
          "r/state.json": "{}", "r/figures": _symlink(".")}),
    Case("output-is-input", "report-md-symlink-to-result", ["report", "r", "--no-figures"],
         r"report\.md: .* is the same file as result\.json",
         {"r/result.json": json.dumps({"method": "w2s", "evals": [{"model": "a", "correct": 1, "n": 2}]}),
          "r/state.json": "{}", "r/report.md": _symlink("result.json")}),
    # -- NaN and inf --------------------------------------------------------------------------
    Case("nan/inf", "config-lr-nan", ["config", "show", "{cfg}", "--set", "weak_sft.train.lr=nan"],
         r"weak_sft\.train\.lr: expected a finite float, got 'nan'"),
    Case("nan/inf", "config-temperature-inf", ["config", "show", "{cfg}", "--set", "stage2.temperature=inf"],
         r"stage2\.temperature: expected a finite float"),
    Case("nan/inf", "config-yaml-inf", ["config", "show", "{cfg}", "--set", "greedy.temperature=.inf"],
         r"greedy\.temperature: expected a finite float, got inf"),
    Case("nan/inf", "config-dict-float-nan", ["config", "show", "{cfg}", "--set",
                                              "weak_sft.train.resources_per_worker.CPU=nan"],
         r"resources_per_worker\.CPU: expected a finite float"),
    Case("nan/inf", "run-top-p-minus-inf", ["run", "{cfg}", *W, "--set", "greedy.top_p=-.inf"],
         r"greedy\.top_p: expected a finite float"),
    Case("nan/inf", "run-stall-timeout-nan", ["run", "{cfg}", *W, "--set", "cluster.stall_timeout_s=nan"],
         r"cluster\.stall_timeout_s: expected a finite float"),
    Case("nan/inf", "run-stall-timeout-zero", ["run", "{cfg}", *W, "--set", "cluster.stall_timeout_s=0"],
         r"cluster\.stall_timeout_s: expected a finite number > 0"),
    Case("misc", "run-replica-reserves-nothing", ["run", "{cfg}", *W, "--set", "cluster.cpus_per_replica=0"],
         r"cluster\.cpus_per_replica: expected > 0 when gpus_per_replica is 0"),
    Case("misc", "run-role-reserves-nothing", ["run", "{cfg}", *W, "--set",
                                               "cluster.roles.critic.cpus_per_replica=0"],
         r"cluster\.roles\.critic\.cpus_per_replica: expected > 0 when gpus_per_replica is 0"),
    Case("misc", "run-role-unknown", ["run", "{cfg}", *W, "--set", "cluster.roles.guided.replicas=2"],
         r"cluster\.roles\.guided: unknown role \(known: sampler, critic, decoder, explorer\)"),
    Case("misc", "run-stage2-questions-not-int", ["run", "{cfg}", *W, "--set", "stage2.questions=many"],
         r"stage2\.questions: expected int, got 'many'"),
    Case("nan/inf", "run-stage2-questions-nan", ["run", "{cfg}", *W, "--set", "stage2.questions=nan"],
         r"stage2\.questions: expected int, got 'nan'"),
    Case("misc", "run-instruction-not-text", ["run", "{cfg}", *W, "--set", "instruction=[a, b]"],
         r"instruction: expected str, got \['a', 'b'\]"),
    Case("nan/inf", "run-lr-schedule-unknown", ["run", "{cfg}", *W, "--set",
                                                "weak_sft.train.lr_schedule=linear"],
         r"weak_sft\.train\.lr_schedule: expected one of 'cosine', 'constant', got 'linear'"),
    Case("nan/inf", "config-file-nan", ["config", "show", "n.yaml"], r"n\.yaml: weak_sft\.train\.lr: expected a finite float, got nan",
         {"n.yaml": lambda path, model: path.write_text(
             DEMO_CFG.read_text().replace("lr: 3.0e-3, max_steps: 30", "lr: .nan, max_steps: 30"))}),
    Case("nan/inf", "train-flag-lr-nan", ["train", "--kind", "sft", "--model", "m", "--data", "d", "--out", "o",
                                          "--lr", "nan"], r"lr: expected a finite float"),
    Case("nan/inf", "train-set-warmup-inf", ["train", "--kind", "sft", "--model", "m", "--data", "d", "--out", "o",
                                             "--set", "warmup_ratio=inf"], r"warmup_ratio: expected a finite float"),
    Case("nan/inf", "eval-flag-temperature-nan", [*EVAL, "--data", "gsm8k:t.jsonl", "--temperature", "nan"],
         r"sampling\.temperature: expected a finite float", {"t.jsonl": GSM8K_OK}),
    Case("nan/inf", "eval-flag-top-p-inf", [*EVAL, "--data", "gsm8k:t.jsonl", "--top-p", "inf"],
         r"sampling\.top_p: expected a finite float", {"t.jsonl": GSM8K_OK}),
    Case("nan/inf", "data-infinity-literal", ["data", "prepare", "gsm8k", "--input", "i.jsonl", "--out", "o.jsonl"],
         r"i\.jsonl:1: Infinity is not valid JSON", {"i.jsonl": '{"question": "q", "answer": Infinity}\n'}),
    Case("nan/inf", "data-nan-math500", ["data", "prepare", "math500", "--input", "n.jsonl", "--out", "o.jsonl"],
         r"n\.jsonl:2: NaN is not valid JSON", {"n.jsonl": '{"problem": "q", "answer": "1"}\n'
                                                           '{"problem": "q", "answer": NaN}\n'}),
    Case("nan/inf", "data-json-list-minus-inf", ["data", "prepare", "jsonl", "--input", "n.json", "--out", "o.jsonl"],
         r"n\.json: -Infinity is not valid JSON", {"n.json": '[{"question": "q", "gold_answer": -Infinity}]'}),
    Case("nan/inf", "data-parquet-inf", ["data", "prepare", "math500", "--input", "i.parquet", "--out", "o.jsonl"],
         r"i\.parquet:1: field 'answer' is inf", {"i.parquet": _parquet([{"problem": "q", "answer": float("inf")}])}),
    Case("nan/inf", "data-parquet-generic-nan", ["data", "prepare", "jsonl", "--input", "n.parquet", "--out", "o.jsonl"],
         r"n\.parquet:1: field 'gold_answer' is nan", {"n.parquet": _parquet([{"question": "q",
                                                                             "gold_answer": float("nan")}])}),
    Case("nan/inf", "grade-gold-nan", ["grade", "n.jsonl", "--out", "o.jsonl"], r"n\.jsonl:1: NaN is not valid JSON",
         {"n.jsonl": '{"pred": "nan", "gold": NaN}\n'}),
    Case("nan/inf", "grade-parquet-gold-nan", ["grade", "n.parquet", "--out", "o.jsonl"],
         r"n\.parquet:1: field 'gold' is nan", {"n.parquet": _parquet([{"pred": "1", "gold": float("nan")}])}),
    # -- model and adapter dirs, checked in the driver ----------------------------------------
    Case("model dirs", "run-model-only-config", ["run", "{cfg}", *W, "--set", "models.weak.path=./mc"],
         r"models\.weak\.path: model directory .*mc: no \*\.safetensors", {"mc": ONLY_CONFIG}),
    Case("model dirs", "run-model-garbage-weights", ["run", "{cfg}", *W, "--set", "models.weak.path=./mg"],
         r"models\.weak\.path: .*model\.safetensors: not a safetensors file", {"mg": _model_copy(_garbage_weights)}),
    Case("model dirs", "run-model-truncated", ["run", "{cfg}", *W, "--set", "models.strong.path=./mt"],
         r"models\.strong\.path: .*model\.safetensors: truncated", {"mt": _model_copy(_truncate)}),
    Case("model dirs", "run-model-auto-map", ["run", "{cfg}", *W, "--set", "models.weak.path=./ma"],
         r"models\.weak\.path: .*auto_map .*trust_remote_code", {"ma": _model_copy(_auto_map)}),
    Case("model dirs", "run-adapter-only-config", ["run", "{cfg}", *W, "--set", "models.weak.path={model}",
                                                   "--set", "models.weak.adapter=./mc"],
         r"models\.weak\.adapter: .*not a LoRA adapter dir", {"mc": ONLY_CONFIG}),
    Case("model dirs", "run-adapter-no-weights", ["run", "{cfg}", *W, "--set", "models.weak.path={model}",
                                                  "--set", "models.weak.adapter=./adp"],
         r"models\.weak\.adapter: .*missing adapter_model\.safetensors", ADAPTER_CONFIG_ONLY),
    Case("model dirs", "config-show-bad-config-json", ["config", "show", "{cfg}", "--set", "models.weak.path=./mj"],
         r"models\.weak\.path: .*config\.json:1: malformed JSON", {"mj": _model_copy(
             lambda d: (d / "config.json").write_text("{not json"))}),
    Case("model dirs", "eval-model-only-config", [*EVAL[:1], "--model", "./mc", "--data", "gsm8k:t.jsonl", "--out", "o"],
         r"mc: no \*\.safetensors weights", {"mc": ONLY_CONFIG, "t.jsonl": GSM8K_OK}),
    Case("model dirs", "eval-model-garbage-weights", ["eval", "--model", "./mg", "--data", "gsm8k:t.jsonl", "--out", "o"],
         r"model\.safetensors: not a safetensors file", {"mg": _model_copy(_garbage_weights), "t.jsonl": GSM8K_OK}),
    Case("model dirs", "info-truncated", ["models", "info", "./mt"], r"model\.safetensors: truncated",
         {"mt": _model_copy(_truncate)}),
    Case("model dirs", "eval-model-auto-map", ["eval", "--model", "./ma", "--data", "gsm8k:t.jsonl", "--out", "o"],
         r"model\.path: .*auto_map", {"ma": _model_copy(_auto_map), "t.jsonl": GSM8K_OK},
         ),
    Case("model dirs", "eval-adapter-only-config", [*EVAL, "--adapter", "./mc", "--data", "gsm8k:t.jsonl"],
         r"model\.adapter: .*not a LoRA adapter dir", {"mc": ONLY_CONFIG, "t.jsonl": GSM8K_OK},
         ),
    Case("model dirs", "train-model-garbage-weights", ["train", "--kind", "sft", "--model", "./mg", "--data", "s.jsonl",
                                                       "--out", "o"], r"model: .*not a safetensors file",
         {"mg": _model_copy(_garbage_weights), "s.jsonl": SFT_OK},
         ),
    # -- checks that ran only inside Ray (a replica, a recipe stage), now in the driver -------
    # model dirs whose config.json, weight shapes or tokenizer cannot serve: every command
    Case("checked-in-driver", "eval-model-no-tokenizer", ["eval", "--model", "./nt", "--data", "gsm8k:t.jsonl",
                                                         "--out", "o"],
         r"^error: model\.path: model directory (\S*/)?nt: no tokenizer \(expected tokenizer\.json",
         {"nt": NO_TOKENIZER, "t.jsonl": GSM8K_OK}),
    Case("checked-in-driver", "sample-model-broken-tokenizer", ["sample", "--model", "./bt", "--data",
                                                               "gsm8k:t.jsonl", "--out", "o"],
         r"model\.path: .*bt/tokenizer\.json:1: malformed JSON", {"bt": BROKEN_TOKENIZER, "t.jsonl": GSM8K_OK}),
    Case("checked-in-driver", "eval-model-unknown-type", ["eval", "--model", "./ut", "--data", "gsm8k:t.jsonl",
                                                         "--out", "o"],
         r"model\.path: .*ut/config\.json: model_type 'frobnicator' is not an architecture this "
         r"transformers knows", {"ut": UNKNOWN_TYPE, "t.jsonl": GSM8K_OK}),
    Case("checked-in-driver", "eval-model-kv-heads", ["eval", "--model", "./kv", "--data", "gsm8k:t.jsonl",
                                                     "--out", "o"],
         r"kv/config\.json: num_attention_heads 2 is not a multiple of num_key_value_heads 3",
         {"kv": KV_HEADS, "t.jsonl": GSM8K_OK}),
    Case("checked-in-driver", "sample-model-hidden-vs-weights", ["sample", "--model", "./hm", "--data",
                                                                "gsm8k:t.jsonl", "--out", "o"],
         r"hm/config\.json: does not match the weights: model\.safetensors stores model\.layers\.0\.mlp\."
         r"down_proj\.weight as \[128, 512\], config\.json implies \[130, 512\]",
         {"hm": HIDDEN_MISMATCH, "t.jsonl": GSM8K_OK}),
    Case("checked-in-driver", "eval-model-layers-missing", ["eval", "--model", "./lm", "--data",
                                                           "gsm8k:t.jsonl", "--out", "o"],
         r"lm/config\.json: num_hidden_layers is 4 but the weights hold no layer 2, 3",
         {"lm": LAYERS_MISSING, "t.jsonl": GSM8K_OK}),
    Case("checked-in-driver", "eval-tokenizer-past-vocab", ["eval", "--model", "./tv", "--data",
                                                           "gsm8k:t.jsonl", "--out", "o"],
         r"tv/config\.json: vocab_size 512 is smaller than the tokenizer's 601 ids \(tokenizer\.json\)",
         {"tv": TOKENIZER_PAST_VOCAB, "t.jsonl": GSM8K_OK}),
    Case("checked-in-driver", "eval-verifier-without-backbone", [*EVAL, "--data", "gsm8k:t.jsonl", "--engine",
                                                                "guided", "--verifier", "v"],
         r"^error: engine\.verifier: model directory v: missing config\.json",
         {"v": _verifier_head_only, "t.jsonl": GSM8K_OK}),
    Case("checked-in-driver", "info-no-tokenizer", ["models", "info", "./nt"], r"nt: no tokenizer",
         {"nt": NO_TOKENIZER}),
    Case("checked-in-driver", "info-unknown-type", ["models", "info", "./ut", "--json"],
         r"ut/config\.json: model_type 'frobnicator'", {"ut": UNKNOWN_TYPE}),
    Case("checked-in-driver", "info-tokenizer-past-vocab", ["models", "info", "./tv"],
         r"vocab_size 512 is smaller than the tokenizer's 601 ids", {"tv": TOKENIZER_PAST_VOCAB}),
    Case("checked-in-driver", "train-model-broken-tokenizer", ["train", "--kind", "sft", "--model", "./bt",
                                                              "--data", "s.jsonl", "--out", "o"],
         r"^error: --model|^error: model: .*bt/tokenizer\.json:1: malformed JSON",
         {"bt": BROKEN_TOKENIZER, "s.jsonl": SFT_OK}),
    Case("checked-in-driver", "run-model-kv-heads", ["run", "{cfg}", *W, "--set", "models.weak.path=./kv"],
         r"models\.weak\.path: .*num_attention_heads 2 is not a multiple of num_key_value_heads 3",
         {"kv": KV_HEADS}),
    Case("checked-in-driver", "config-show-model-no-tokenizer", ["config", "show", "{cfg}", "--set",
                                                                "models.strong.path=./nt"],
         r"models\.strong\.path: model directory .*nt: no tokenizer", {"nt": NO_TOKENIZER}),
    # dataset options: checked when the config is read, not when a stage loads the data
    Case("checked-in-driver", "config-show-synthetic-ops-not-text", ["config", "show", "{cfg}", "--set",
                                                                    "data.test.options.ops=5"],
         r"data\.test\.options\.ops: expected a string of '\+', '-', '\*'"),
    Case("checked-in-driver", "run-synthetic-steps-reversed", ["run", "{cfg}", *W, "--set",
                                                              "data.train_1.options.min_steps=4"],
         r"data\.train_1\.options\.steps: expected 1 <= min_steps <= max_steps, got 4\.\.3"),
    Case("checked-in-driver", "run-synthetic-unknown-option", ["run", "{cfg}", *W, "--set",
                                                              "data.test.options.nn=5"],
         r"data\.test\.options\.nn: unknown option for dataset 'synthetic' \(known: max_operand, "),
    Case("checked-in-driver", "run-gsm8k-keeps-synthetic-options", ["run", "{cfg}", *W, "--set",
                                                                    "data.test.name=gsm8k", "--set",
                                                                    "data.test.path=t.jsonl"],
         r"data\.test\.options\.n: unknown option for dataset 'gsm8k' \(known: split, strip_calc\)",
         {"t.jsonl": GSM8K_OK}),
    Case("checked-in-driver", "eval-olympiad-exclude-not-list", [*EVAL, "--data", "olympiad:t.jsonl", "--set",
                                                                "data.options.exclude_answer_types=5"],
         r"data\.options\.exclude_answer_types: expected a list of answer types \(text\), e\.g\. "
         r"\[CODE, OT\], got 5", {"t.jsonl": OLYMPIAD_OK}),
    Case("checked-in-driver", "sample-strip-calc-not-bool", ["sample", "--model", "{model}", "--data",
                                                            "gsm8k:t.jsonl", "--out", "o", "--set",
                                                            "data.options.strip_calc=maybe"],
         r"data\.options\.strip_calc: expected true or false, got 'maybe'", {"t.jsonl": GSM8K_OK}),
    Case("checked-in-driver", "prepare-fields-on-gsm8k", ["data", "prepare", "gsm8k", "--input", "t.jsonl",
                                                         "--field", "question=q", "--out", "o.jsonl"],
         r"data\.fields: only dataset 'jsonl' maps fields", {"t.jsonl": GSM8K_OK}),
    # -- resource bombs: expansion, nesting and sizes in YAML, data files and numbers ----------
    Case("resource-bomb", "config-billion-laughs", ["config", "show", "l.yaml"],
         r"^error: l\.yaml: its anchors and aliases expand to [\d,]+ values \(at most 100,000 values",
         {"l.yaml": _billion_laughs()}),
    Case("resource-bomb", "run-yaml-nested-100k", ["run", "d.yaml", *W],
         r"^error: d\.yaml:2: nested deeper than 64 levels", {"d.yaml": f"recipe: weak_to_strong\nseed: {DEEP}\n"}),
    Case("resource-bomb", "config-recursive-alias", ["config", "show", "r.yaml"],
         r"^error: r\.yaml:2: an alias to a value that contains it", {"r.yaml": "recipe: llm2\nx: &a [1, *a]\n"}),
    Case("resource-bomb", "train-yaml-int-5000-digits", ["train", "--config", "t.yaml"],
         r"^error: t\.yaml:2: an integer of 5,000 characters", {"t.yaml": "kind: sft\nseed: " + "9" * 5000 + "\n"}),
    Case("resource-bomb", "eval-config-file-8mb", ["eval", "--config", "e.yaml"],
         r"^error: e\.yaml: [\d,]+ bytes; a config file is at most 4,194,304 bytes",
         {"e.yaml": "out: o\nmodel_name: " + "x" * (8 << 20) + "\n"}),
    Case("resource-bomb", "config-set-nested-10k", ["config", "show", "{cfg}", "--set",
                                                   "instruction=" + "[" * 10_000 + "]" * 10_000],
         r"^error: --set instruction:1: nested deeper than 64 levels"),
    Case("resource-bomb", "prepare-option-nested", [*PREP, "--option", "ops=" + "{{a: " * 200 + "1" + "}}" * 200,
                                                    "--out", "o.jsonl"],
         r"^error: --option ops:1: nested deeper than 64 levels"),
    Case("resource-bomb", "eval-n-trillion", [*EVAL, "--data", "gsm8k:t.jsonl", "--n", "1000000000000"],
         r"^error: sampling\.n: expected 1 <= value <= 4,096, got 1,000,000,000,000", {"t.jsonl": GSM8K_OK}),
    Case("resource-bomb", "sample-max-new-tokens-billion", ["sample", "--model", "{model}", "--data",
                                                           "gsm8k:t.jsonl", "--out", "o", "--max-new-tokens",
                                                           "1000000000"],
         r"sampling\.max_new_tokens: expected 1 <= value <= 1,048,576, got 1,000,000,000", {"t.jsonl": GSM8K_OK}),
    Case("resource-bomb", "eval-seed-beyond-int64", [*EVAL, "--data", "gsm8k:t.jsonl", "--seed", "1" + "0" * 30],
         r"^error: sampling\.seed: 1(0){30} is out of range \(a setting is a 64-bit integer", {"t.jsonl": GSM8K_OK}),
    Case("resource-bomb", "run-replicas-million", ["run", "{cfg}", *W, "--set", "cluster.replicas=1000000"],
         r"cluster\.replicas: expected 1 <= value <= 4,096, got 1,000,000"),
    Case("resource-bomb", "run-option-1e400", ["run", "{cfg}", *W, "--set", "data.test.options.max_operand=1.0e+400"],
         r"data\.test\.options\.max_operand: expected an integer from 2 to 1,000,000, got inf"),
    Case("resource-bomb", "prepare-synthetic-n-trillion", [*PREP[:3], "--option", "n=1000000000000", "--out",
                                                           "o.jsonl"],
         r"data\.options\.n: expected an integer from 1 to 10,000,000, got 1000000000000"),
    Case("resource-bomb", "train-workers-huge", ["train", "--kind", "sft", "--model", "{model}", "--data", "s.jsonl",
                                                 "--out", "o", "--workers", "100000"],
         r"num_workers: expected 1 <= value <= 4,096", {"s.jsonl": SFT_OK}),
    Case("resource-bomb", "tiny-model-too-big", ["models", "tiny", "--out", "m", "--layers", "100000"],
         r"^error: --hidden 128 --layers 100000 --vocab-size 512: [\d,]+ parameters; a tiny model is at most "
         r"1,000,000,000"),
    Case("resource-bomb", "grade-processes-million", ["grade", "in.jsonl", "--out", "o.jsonl", "--processes",
                                                      "1000000"],
         r"--processes: 1000000 is not in the range 1<=x<=256", {"in.jsonl": GRADE_OK}),
    Case("resource-bomb", "prepare-jsonl-line-32mib", ["data", "prepare", "gsm8k", "--input", "l.jsonl", "--out",
                                                       "o.jsonl"],
         r"^error: l\.jsonl:2: a line longer than 33,554,432 bytes", {"l.jsonl": _long_line}),
    Case("resource-bomb", "prepare-jsonl-nested-100k", ["data", "prepare", "jsonl", "--input", "d.jsonl", "--out",
                                                        "o.jsonl"],
         r"^error: d\.jsonl:1: values nested more than 64 levels deep",
         {"d.jsonl": '{"question": "q", "meta": ' + DEEP + '}\n'}),
    Case("resource-bomb", "show-json-list-nested", ["data", "show", "d.json"],
         r"^error: d\.json: values nested more than 64 levels deep", {"d.json": "[" + DEEP + "]"}),
    Case("resource-bomb", "grade-float-1e400", ["grade", "g.jsonl", "--out", "o.jsonl"],
         r"^error: g\.jsonl:2: the number 1e400 is beyond the range of a float",
         {"g.jsonl": GRADE_OK + '{"pred": 1e400, "gold": "1"}\n'}),
    Case("resource-bomb", "prepare-int-5000-digits", ["data", "prepare", "gsm8k", "--input", "i.jsonl", "--out",
                                                      "o.jsonl"],
         r"^error: i\.jsonl:1: a number of 5,000 digits \(at most 4,300",
         {"i.jsonl": '{"id": ' + "7" * 5000 + ', "question": "q", "answer": "#### 1"}\n'}),
    # report rows a finished run would have written twice (the report check refuses them)
    Case("checked-in-driver", "llm2-beta-sweep-same-row", ["config", "show", str(LLM2_CFG), "--set",
                                                          "decode.beta_sweep=[0.1, 0.1000001]"],
         r"decode\.beta_sweep\[1\]: 0\.1000001 is the same row \(guided_beta0\.1\) as beta_sweep\[0\]"),
    Case("checked-in-driver", "critique-gate-twice", ["run", str(CRITIQUE_CFG), *W, "--set",
                                                     "test_time.gates=[oracle, critic, oracle]"],
         r"test_time\.gates\[2\]: 'oracle' is listed twice"),
    Case("resource-bomb", "llm2-maj-k-million", ["run", str(LLM2_CFG), *W, "--set", "decode.maj_k=1000000"],
         r"decode\.maj_k: expected 0 <= value <= 4,096, got 1,000,000"),
    # -- corrupt run state ----------------------------------------------------------------------
    Case("run state", "status-state-malformed", ["status", "r"], r"corrupt run state: .*state\.json:1: malformed JSON"
         r".*delete it", {"r/state.json": '{"stages": {'}),
    Case("run state", "status-state-binary", ["status", "r"], r"corrupt run state: .*state\.json:1: a binary file",
         {"r/state.json": BINARY}),
    Case("run state", "status-state-list", ["status", "r"], r"state\.json: expected an object .*delete it",
         {"r/state.json": "[]"}),
    Case("run state", "status-stages-list", ["status", "r"], r"state\.json: expected an object", {"r/state.json":
                                                                                               '{"stages": []}'}),
    Case("run state", "run-state-malformed", ["run", "{cfg}", *W], r"corrupt run state: .*state\.json:1: malformed",
         {"r/state.json": "{"}),
    Case("run state", "run-manifest-malformed", ["run", "{cfg}", *W], r"corrupt run state: .*_MANIFEST\.json:1: "
         r"malformed JSON.*delete .*_MANIFEST\.json to re-run the stage",
         {"r/state.json": "{}", "r/iter_0/problems_train_1/_MANIFEST.json": '{"kind": '}),
    Case("run state", "run-manifest-wrong-shape", ["run", "{cfg}", *W], r"_MANIFEST\.json: corrupt manifest",
         {"r/state.json": "{}", "r/iter_0/test/_MANIFEST.json": '{"kind": "problems", "rows": "many"}'}),
    Case("run state", "run-model-marker", ["run", "{cfg}", *W], r"corrupt model marker: .*_COMPLETE\.json.*delete",
         {"r/state.json": "{}", "r/models/weak/_COMPLETE.json": "[1,"}),
    Case("run state", "run-config-yaml", ["run", "{cfg}", *W], r"config\.yaml: invalid YAML .*--force",
         {"r/state.json": "{}", "r/config.yaml": "a: [\n"}),
    Case("run state", "show-manifest-binary", ["data", "show", "st"], r"_MANIFEST\.json:\d+: a binary file.*delete",
         {"st/part-00000.parquet": _parquet([{"a": 1}]), "st/_MANIFEST.json": BINARY}),
    # -- run state and reports: what is read is validated, each error says how to recover ------
    Case("run-state", "report-sections-not-text", ["report", "r", "--no-figures"],
         r"^error: r/result\.json: sections: expected an object of heading -> text; it is written by "
         r"`raysys run` when a run finishes: re-run the run's config",
         {"r/result.json": _result(sections={"Notes": 5}), "r/state.json": STATE_STAGE}),
    Case("run-state", "report-maj-acc-out-of-range", ["report", "r"],
         r"evals\[0\] \(a\)\.maj_acc: expected a fraction in \[0, 1\], got 1\.7",
         {"r/result.json": _result({**ROW_A, "maj_acc": 1.7, "maj_k": 4}), "r/state.json": "{}"}),
    Case("run-state", "report-result-nan", ["report", "r"], r"r/result\.json: NaN is not valid JSON",
         {"r/result.json": _result({**ROW_A, "maj_acc": float("nan")}), "r/state.json": "{}"}),
    Case("run-state", "report-row-twice", ["report", "r"],
         r"evals\[1\]: row 'a' appears twice \(its comparisons would be ambiguous\)",
         {"r/result.json": _result(ROW_A, ROW_A), "r/state.json": "{}"}),
    Case("run-state", "report-round-table-garbage", ["report", "r"],
         r"the test-time round table of 'oracle': expected rows of finite numbers with last, last_hi, "
         r"last_lo, round, tokens_total",
         {"r/result.json": json.dumps({"method": "critique", "evals": [ROW_A],
                                       "extra": {"test_time": {"oracle": [{"round": 1, "last": 0.5}]}}}),
          "r/state.json": "{}"}),
    Case("run-state", "report-state-seconds-text", ["report", "r"],
         r"corrupt run state: r/state\.json: stages\['iter_0/s'\]\.seconds: expected a finite number >= 0 "
         r"or null, got 'abc'; delete it",
         {"r/result.json": _result(), "r/state.json": _state(iter_0__s={**COMPLETE, "seconds": "abc"})}),
    Case("run-state", "report-state-metric-text", ["report", "r", "--no-figures"],
         r"stages\['iter_0/s'\]\.metrics\.grading_s: expected a finite number >= 0, got 'slow'",
         {"r/result.json": _result(), "r/state.json": _state(iter_0__s={**COMPLETE,
                                                                         "metrics": {"grading_s": "slow"}})}),
    Case("run-state", "status-runs-not-objects", ["status", "r"], r"r/state\.json: runs\[0\]: expected an object",
         {"r/state.json": '{"stages": {}, "runs": [1]}'}),
    Case("run-state", "status-stage-key-escapes", ["status", "r"],
         r"stages\['\.\./\.\./etc'\]: expected a stage key iter_<k>/<name> or models/<name>",
         {"r/state.json": _state(**{"..__..__etc": COMPLETE})}),
    Case("run-state", "status-part-gone", ["status", "r"],
         r"^error: damaged run data: .*r/iter_0/s: part-00000\.parquet is gone \(the manifest lists it\); "
         r"delete .*r/iter_0/s and re-run the run's command \(`raysys run .*r/config\.yaml`\) to rebuild "
         r"stage iter_0/s", {"r/state.json": STATE_STAGE, "r/iter_0/s": _complete_stage(_drop("part-00000.parquet"))}),
    Case("run-state", "status-part-checksum", ["status", "r"],
         r"damaged run data: .*part-00000\.parquet does not match its checksum in _MANIFEST\.json",
         {"r/state.json": STATE_STAGE, "r/iter_0/s": _complete_stage(_flip_last_byte)}),
    Case("run-state", "status-part-not-in-manifest", ["status", "r"],
         r"damaged run data: .*part-00001\.parquet not in _MANIFEST\.json",
         {"r/state.json": STATE_STAGE, "r/iter_0/s": _complete_stage(
             lambda d: shutil.copy(d / "part-00000.parquet", d / "part-00001.parquet"))}),
    Case("run-state", "status-manifest-gone", ["status", "r"],
         r"damaged run data: .*r/iter_0/s: its _MANIFEST\.json is gone, though state\.json shows the stage "
         r"complete", {"r/state.json": STATE_STAGE, "r/iter_0/s": _complete_stage(_drop("_MANIFEST.json"))}),
    Case("run-state", "status-model-weights-gone", ["status", "r"],
         r"damaged run data: model directory .*r/models/m: no \*\.safetensors weights; delete .*r/models/m",
         {"r/state.json": _state(models__m={"status": "complete"}),
          "r/models/m": _model_copy(_drop("model.safetensors")),
          "r/models/m/_COMPLETE.json": '{"name": "m"}'}),
    Case("run-state", "run-resume-part-changed", ["run", "{cfg}", *W],
         r"^error: damaged run data: .*r/iter_0/s: part-00000\.parquet does not match its checksum.*delete "
         r".*r/iter_0/s and re-run", {"r/state.json": STATE_STAGE, "r/iter_0/s": _complete_stage(_flip_last_byte)}),
    Case("run-state", "compare-same-dir-twice", ["compare", "r1", "r1"],
         r"^error: r1: the same run dir as r1 \(given twice\); each run counts once",
         {"r1/result.json": _result(), "r1/state.json": STATE_STAGE}),
    Case("run-state", "compare-symlink-to-a-run", ["compare", "r1", "r2", "l"],
         r"^error: l: the same run dir as r1 \(given twice, under another name\)",
         {"r1/result.json": _result(), "r1/state.json": STATE_STAGE, "l": _symlink("r1"),
          "r2/result.json": _result(), "r2/state.json": _state(pid=4343)}),
    Case("run-state", "compare-copied-run", ["compare", "r1", "./r2/"],
         r"^error: \./r2/: a copy of r1 \(its state\.json records the same invocations\)",
         {"r1/result.json": _result(), "r1/state.json": STATE_STAGE,
          "r2/result.json": _result(), "r2/state.json": STATE_STAGE}),
    # -- smaller ones: ~ paths read where they are checked, duplicate ids, empty values,
    #    missing arguments with their reason, hints naming the command's own options, a budget --
    Case("small", "show-tilde-binary", ["data", "show", "~/b.jsonl"], r"^error: .*/home/b\.jsonl:1: binary data",
         {"home/b.jsonl": BINARY}, env=HOME),
    Case("small", "config-show-tilde-binary", ["config", "show", "~/c.yaml"], r"^error: .*/home/c\.yaml:1: a binary",
         {"home/c.yaml": BINARY}, env=HOME),
    Case("small", "status-tilde-corrupt-state", ["status", "~/r"],
         r"^error: corrupt run state: .*/home/r/state\.json:1: malformed JSON", {"home/r/state.json": "{"},
         env=HOME),
    Case("small", "report-tilde-result-binary", ["report", "~/r"], r"^error: .*/home/r/result\.json:1: a binary",
         {"home/r/result.json": BINARY, "home/r/state.json": "{}"}, env=HOME),
    Case("small", "tiny-tilde-corpus-binary", ["models", "tiny", "--corpus", "~/c.txt", "--out", "m"],
         r"^error: .*/home/c\.txt:1: a binary file", {"home/c.txt": BINARY}, env=HOME),
    Case("small", "compare-tilde-same-run", ["compare", "home/r", "~/r"],
         r"^error: ~/r: the same run dir as home/r \(given twice, under another name\)",
         {"home/r/result.json": _result(), "home/r/state.json": STATE_STAGE}, env=HOME),
    Case("small", "prepare-duplicate-ids", ["data", "prepare", "gsm8k", "--input", "t.jsonl", "--out", "o.jsonl"],
         r"^error: t\.jsonl:2: id '7' is already the id of the problem on line 1; problem ids must be unique",
         {"t.jsonl": DUP_IDS}),
    Case("small", "eval-duplicate-ids", [*EVAL, "--data", "jsonl:t.jsonl", "--set", "data.fields.gold_answer=a"],
         r"^error: t\.jsonl:2: id 'q' is already the id of the problem on line 1",
         {"t.jsonl": '{"id": "q", "question": "a", "a": "1"}\n{"id": "q", "question": "b", "a": "2"}\n'}),
    Case("small", "config-show-duplicate-ids", ["config", "show", "c.yaml"],
         r"^error: t\.jsonl:2: id '7' is already the id", {"t.jsonl": DUP_IDS, "c.yaml": lambda path, model:
             path.write_text(DEMO_CFG.read_text().replace(
                 "test: {name: synthetic, options: {n: 32, seed: 3, max_operand: 10}}",
                 "test: {name: gsm8k, path: t.jsonl}"))}),
    Case("small", "grade-out-empty", ["grade", "in.jsonl", "--out", ""], r"^error: --out: an empty value; it is "
         r"required", {"in.jsonl": GRADE_OK}),
    Case("small", "eval-out-empty", ["eval", "--model", "{model}", "--data", "gsm8k:t.jsonl", "--out", ""],
         r"^error: --out: an empty value; give one or leave it out", {"t.jsonl": GSM8K_OK}),
    Case("small", "run-dir-empty", ["run", "{cfg}", "--run-dir", ""], r"^error: --run-dir: an empty value"),
    Case("small", "status-run-dir-empty", ["status", ""], r"^error: RUN_DIR: an empty value; it is required"),
    Case("small", "set-empty-value", ["config", "show", "{cfg}", "--set", "run_dir="],
         r"^error: --set run_dir=: no value; write run_dir='' for empty text or run_dir=null for none"),
    Case("small", "prepare-option-empty", [*PREP[:3], "--option", "n=", "--out", "o.jsonl"],
         r"^error: --option n=: no value"),
    Case("small", "grade-missing-input", ["grade", "--out", "o.jsonl"],
         r"^error: IN\.jsonl: missing; the predictions to grade \(JSONL, JSON or parquet rows with pred and gold\)"),
    Case("small", "compare-missing-runs", ["compare"], r"^error: RUN_DIRS: missing; two or more run directories"),
    Case("small", "eval-missing-model", ["eval", "--data", "gsm8k:t.jsonl", "--out", "o"],
         r"^error: --model: missing; the model dir \(or hub id\) to sample from \(or model: in --config\)",
         {"t.jsonl": GSM8K_OK}),
    Case("small", "train-missing-kind", ["train", "--model", "{model}", "--data", "s.jsonl", "--out", "o"],
         r"^error: --kind: missing; the loss: sft, dpo, orpo or verifier", {"s.jsonl": SFT_OK}),
    Case("small", "tiny-missing-out", ["models", "tiny"], r"^error: --out: missing; Directory to write"),
    Case("small", "prepare-name-is-a-path", ["data", "prepare", "t.jsonl", "--out", "o.jsonl"],
         r"^error: NAME: 't\.jsonl' looks like a file path.*raysys data prepare jsonl --input t\.jsonl",
         {"t.jsonl": GSM8K_OK}),
    Case("small", "eval-few-shot-past-demos", [*EVAL, "--data", "gsm8k:t.jsonl", "--few-shot", "5", "--demos",
                                               "d.jsonl"],
         r"^error: few_shot: asked for 5 demonstrations but only 1 rows are available",
         {"t.jsonl": GSM8K_OK, "d.jsonl": GSM8K_OK}),
    Case("small", "grade-time-budget", ["grade", "h.jsonl", "--out", "o.jsonl", "--time-budget", "0.5"],
         r"^error: h\.jsonl: grading stopped after the 0\.5 s budget with \d+ of 100 rows decided "
         r"\(--time-budget 0\.5\); nothing written", {"h.jsonl": _hard_rows}),
    Case("small", "grade-time-budget-nan", ["grade", "in.jsonl", "--out", "o.jsonl", "--time-budget", "nan"],
         r"--time-budget: expected a finite number of seconds > 0, got nan", {"in.jsonl": GRADE_OK}),
    # -- addresses, duplicate keys, --data without NAME: ----------------------------------------
    Case("misc", "run-unreachable-address", ["run", "{cfg}", *W, "--set", "cluster.address=127.0.0.1:{port}"],
         r"cluster\.address: cannot reach Ray at 127\.0\.0\.1:\d+ \(Connection refused"),
    Case("misc", "run-http-address", ["run", "{cfg}", *W, "--set", "cluster.address=http://127.0.0.1:8265"],
         r"cluster\.address: http://127\.0\.0\.1:8265 is a dashboard"),
    Case("misc", "eval-unreachable-address", [*EVAL, "--data", "gsm8k:t.jsonl", "--address", "ray://127.0.0.1:{port}"],
         r"cluster\.address: cannot reach Ray", {"t.jsonl": GSM8K_OK},
         ),
    Case("misc", "config-duplicate-key", ["config", "show", "d.yaml"], r"d\.yaml:3: duplicate key 'seed' \(first set "
         r"on line 2\)", {"d.yaml": "recipe: weak_to_strong\nseed: 1\nseed: 2\n"}),
    Case("misc", "run-duplicate-nested-key", ["run", "d.yaml"], r"d\.yaml:5: duplicate key 'lr' \(first set "
         r"on line 4\)", {"d.yaml": "recipe: weak_to_strong\nweak_sft:\n  train:\n    lr: 1\n    lr: 2\n"}),
    Case("misc", "train-duplicate-key", ["train", "--config", "d.yaml"], r"d\.yaml:2: duplicate key 'kind'",
         {"d.yaml": "kind: sft\nkind: dpo\n"}),
    Case("misc", "eval-duplicate-key", ["eval", "--config", "d.yaml"], r"d\.yaml:2: duplicate key 'out'",
         {"d.yaml": "out: a\nout: b\n"}),
    Case("misc", "eval-data-without-name", [*EVAL, "--data", "t.jsonl"], r"'t\.jsonl' looks like a file path.*"
         r"NAME:PATH", {"t.jsonl": GSM8K_OK}),
    Case("misc", "usage-unknown-option", ["grade", "--bogus"], r"No such option '--bogus'.*'raysys grade --help'"),
    Case("misc", "usage-bad-int", ["data", "show", "x", "--rows", "-1"], r"--rows: -1 is not in the range"),
]
