"""An output is never one of the inputs: ``raysys.data.io.check_not_an_input`` on hand-made
paths (equal, inside, containing, symlinks, ``~``, relative, ``..``, file vs dir), the dir swap
that keeps an old output whole on failure, and the inputs a config names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raysys.config import ConfigError, DatasetSpec, EngineConfig, ModelSpec, config_inputs
from raysys.data.io import DataError, alias_relation, check_not_an_input, replace_dir_atomic


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``m/`` a model dir, ``d/s.jsonl`` a data file, ``m2/`` a sibling with a shared prefix."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "s.jsonl").write_text("{}\n")
    (tmp_path / "m2").mkdir()
    return tmp_path


@pytest.mark.parametrize("out, inp, relation", [
    ("m", "m", "same"),                       # train --out == --model
    ("m/", "m", "same"),
    ("d/s.jsonl", "d/s.jsonl", "same"),       # data prepare --out == --input
    ("m/adapter", "m", "inside"),             # out inside the model dir
    ("m/new/deeper", "m", "inside"),          # not existing yet, several levels down
    ("d", "d/s.jsonl", "contains"),           # the parent dir of the input file, replaced whole
    (".", "d/s.jsonl", "contains"),
    ("d/../m", "m", "same"),                  # `..`
    ("m/../m/x", "m", "inside"),
    ("d/s.jsonl/x", "d/s.jsonl", "inside"),   # below a file (file vs dir)
    ("m2", "m", None),                        # a shared name prefix is not a parent
    ("m.out", "m", None),
    ("d/s.jsonl.bak", "d/s.jsonl", None),
    ("d/t.jsonl", "d/s.jsonl", None),         # a sibling file in the same dir
    ("m", "d/s.jsonl", None),
])
def test_relations_on_relative_paths(tree: Path, monkeypatch: pytest.MonkeyPatch, out: str, inp: str,
                                     relation: str | None) -> None:
    monkeypatch.chdir(tree)
    assert alias_relation(out, inp) == relation
    # the same answer on absolute paths
    assert alias_relation(tree / out, tree / inp) == relation


def test_message_names_both_keys_and_paths_and_what_to_do(tree: Path) -> None:
    with pytest.raises(DataError) as e:
        check_not_an_input(tree / "m", {"--data": None, "--model": tree / "m"}, "--out")
    msg = str(e.value)
    assert msg.startswith(f"--out: {tree / 'm'} is the same directory as --model ({tree / 'm'}); ")
    assert msg.endswith("choose another --out")
    with pytest.raises(ConfigError, match=r"^run_dir: .* is a directory that contains "
                                          r"data\.train\.path \(.*s\.jsonl\)"):
        check_not_an_input(tree / "d", {"data.train.path": tree / "d" / "s.jsonl"}, "run_dir",
                           error=ConfigError)
    with pytest.raises(DataError, match=r"^--out: .*m/o lies inside --model"):
        check_not_an_input(tree / "m" / "o", {"--model": str(tree / "m")}, "--out")
    with pytest.raises(DataError, match=r"is the same file as IN\.jsonl"):
        check_not_an_input(tree / "d" / "s.jsonl", {"IN.jsonl": tree / "d" / "s.jsonl"}, "--out")


def test_unrelated_none_and_wrong_types_pass(tree: Path) -> None:
    check_not_an_input(tree / "o", {"--model": tree / "m", "--data": tree / "d" / "s.jsonl"}, "--out")
    check_not_an_input(None, {"--model": tree / "m"}, "--out")
    check_not_an_input("", {"--model": tree / "m"}, "--out")
    # a wrong type is the config loader's error, not this check's
    check_not_an_input(tree / "m", {"--model": 5, "--data": None, "x": ""}, "--out")  # type: ignore[dict-item]
    check_not_an_input(7, {"--model": tree / "m"}, "--out")  # type: ignore[arg-type]


def test_symlink_out_to_the_input_and_nonexistent_out_below_a_symlinked_dir(tree: Path) -> None:
    (tree / "link").symlink_to(tree / "m")                  # an existing link to the model dir
    assert alias_relation(tree / "link", tree / "m") == "same"
    assert alias_relation(tree / "link" / "adapter", tree / "m") == "inside"   # does not exist
    with pytest.raises(DataError, match=r"--out: .*link \(.*/m\) is the same directory as --model"):
        check_not_an_input(tree / "link", {"--model": tree / "m"}, "--out")
    (tree / "f.jsonl").symlink_to(tree / "d" / "s.jsonl")    # a file link
    assert alias_relation(tree / "f.jsonl", tree / "d" / "s.jsonl") == "same"
    # the input given through a link, the output by its real path
    assert alias_relation(tree / "d", tree / "f.jsonl") == "contains"
    # a dangling link whose target is inside the input
    (tree / "dangling").symlink_to(tree / "m" / "not-yet")
    assert alias_relation(tree / "dangling", tree / "m") == "inside"
    # a symlinked parent dir pointing at the input's parent: out's resolved parent is the input's
    (tree / "dl").symlink_to(tree / "d")
    assert alias_relation(tree / "dl" / "s.jsonl", tree / "d" / "s.jsonl") == "same"
    assert alias_relation(tree / "dl" / "x" / "y.parquet", tree / "d") == "inside"


def test_tilde_is_expanded(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tree))
    assert alias_relation("~/m", tree / "m") == "same"
    assert alias_relation("~/m/x", "~/m") == "inside"
    assert alias_relation("~", tree / "d" / "s.jsonl") == "contains"
    assert alias_relation("~/o", "~/m") is None


def test_hard_link_is_the_same_file(tree: Path) -> None:
    os.link(tree / "d" / "s.jsonl", tree / "hard.jsonl")
    assert alias_relation(tree / "hard.jsonl", tree / "d" / "s.jsonl") == "same"


def test_bind_like_identity_of_a_dir_under_another_name(tree: Path) -> None:
    """An ancestor that is the input dir under another (case or mount) name: caught by inode."""
    (tree / "alias").symlink_to(tree / "m", target_is_directory=True)
    # resolve() already maps the link; the inode comparison is the fallback for names that
    # resolve() cannot map (case-insensitive file systems, bind mounts)
    assert alias_relation(tree / "alias" / "sub", tree / "m") == "inside"


def test_replace_dir_atomic_swaps_whole_and_keeps_the_old_dir_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "st"
    out.mkdir()
    (out / "part-old.parquet").write_text("old")

    def boom(tmp: Path) -> None:
        (tmp / "part-new.parquet").write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        replace_dir_atomic(boom, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["st"]          # no temp dir left
    assert [p.name for p in out.iterdir()] == ["part-old.parquet"]
    assert replace_dir_atomic(lambda tmp: (tmp / "part-new.parquet").write_text("new"), out) == out
    assert [p.name for p in out.iterdir()] == ["part-new.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["st"]
    fresh = replace_dir_atomic(lambda tmp: (tmp / "a").write_text("x"), tmp_path / "new" / "st")
    assert (fresh / "a").read_text() == "x"


def test_config_inputs_names_every_local_input_and_no_output(tmp_path: Path) -> None:
    from raysys.distributed.evaluate import EvalConfig
    from raysys.training.config import TrainConfig

    ev = EvalConfig(model=ModelSpec(path=str(tmp_path / "m"), adapter="ad"),
                    data=DatasetSpec(name="gsm8k", path="t.jsonl"), out="o", demos="demos.jsonl",
                    engine=EngineConfig(kind="guided", verifier="v"))
    assert config_inputs(ev) == {"model.path": str(tmp_path / "m"), "model.adapter": "ad",
                                 "data.path": "t.jsonl", "demos": "demos.jsonl",
                                 "engine.verifier": "v"}
    # the tiny sentinel, a hub id and an hf:// dataset are not local inputs
    hub = EvalConfig(model=ModelSpec(path="Qwen/Qwen2.5-0.5B"), out="o",
                     data=DatasetSpec(name="gsm8k", path="hf://openai/gsm8k/test.jsonl"))
    assert config_inputs(hub) == {}
    assert config_inputs(ModelSpec(path="tiny"), "models.weak") == {}
    assert config_inputs(TrainConfig(model="./m", data="d", out="o"), "train") == \
        {"train.model": "./m", "train.data": "d"}
    assert config_inputs({"a": [ModelSpec(path="./x")], "b": 3}) == {"a[0].path": "./x"}


def test_recipe_config_inputs_and_run_outputs(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A recipe config's inputs (through its typed config) and the run preflight's check."""
    from raysys.preflight import check_run_outputs, run_inputs
    from raysys.recipes import load_run_config

    cfg_path = Path(__file__).resolve().parents[2] / "configs" / "demo_quick.yaml"
    weak = tmp_path / "weak.jsonl"
    weak.write_text('{"id": "1", "prompt": "q", "response": "a"}\n')
    cfg = load_run_config(cfg_path, [f"run_dir={tmp_path / 'r'}", f"models.weak.path={tiny_model_dir}",
                                     f"data.weak_outputs={weak}"])
    inputs = run_inputs(cfg, cfg_path)
    assert inputs["models.weak.path"] == str(tiny_model_dir)
    assert inputs["data.weak_outputs"] == str(weak)
    assert inputs["CONFIG"] == str(cfg_path)
    assert "models.strong.path" not in inputs          # tiny: built by the run
    check_run_outputs(cfg, cfg_path)
    inside = load_run_config(cfg_path, [f"run_dir={tiny_model_dir}/run", f"models.weak.path={tiny_model_dir}"])
    with pytest.raises(ConfigError, match=r"^run_dir: .*/run lies inside models\.weak\.path"):
        check_run_outputs(inside, cfg_path)
    around = load_run_config(cfg_path, [f"run_dir={tmp_path}", f"data.weak_outputs={weak}"])
    with pytest.raises(ConfigError, match=r"^run_dir: .* is a directory that contains data\.weak_outputs"):
        check_run_outputs(around, cfg_path)
    cache = load_run_config(cfg_path, [f"run_dir={tmp_path / 'r'}", f"tiny_cache={tmp_path}",
                                       f"data.weak_outputs={weak}"])
    with pytest.raises(ConfigError, match=r"^tiny_cache: .* contains data\.weak_outputs"):
        check_run_outputs(cache, cfg_path)
    # a run re-run from the config.yaml it recorded resumes it: not an alias
    own = tmp_path / "own"
    own.mkdir()
    (own / "config.yaml").write_text(cfg_path.read_text())
    again = load_run_config(own / "config.yaml", [f"run_dir={own}"])
    assert "CONFIG" not in run_inputs(again, own / "config.yaml")
    check_run_outputs(again, own / "config.yaml")
    # any other config file inside the run dir is an input it must not contain
    (own / "mine.yaml").write_text(cfg_path.read_text())
    other = load_run_config(own / "mine.yaml", [f"run_dir={own}"])
    with pytest.raises(ConfigError, match=r"contains CONFIG \(.*mine\.yaml\)"):
        check_run_outputs(other, own / "mine.yaml")


def test_report_outputs_never_resolve_to_its_inputs(tmp_path: Path) -> None:
    from raysys.pipeline.report_cmd import check_report_outputs

    run = tmp_path / "r"
    (run).mkdir()
    (run / "result.json").write_text("{}")
    (run / "state.json").write_text("{}")
    check_report_outputs(run, "w2s")
    (run / "figures").symlink_to(run)          # figures/result.json would be result.json
    with pytest.raises(DataError, match=r"^figures/result\.json: .* is the same file as result\.json"):
        check_report_outputs(run, "result")
    check_report_outputs(run, "result", figures=False)
    (run / "report.md").symlink_to(run / "state.json")
    with pytest.raises(DataError, match=r"^report\.md: .* is the same file as state\.json"):
        check_report_outputs(run, "w2s", figures=False)
    with pytest.raises(DataError, match=r"method '\.\./x': expected a plain name"):
        check_report_outputs(run, "../x")
