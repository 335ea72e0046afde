"""A damaged run dir fails before anything is written, and the recovery each error names works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raysys.data.io import write_manifest, write_part
from raysys.errors import StageError
from raysys.pipeline import RunDir, load_state

CFG = {"recipe": "weak_to_strong", "seed": 0}
ROWS = [{"prompt": f"q{i}", "response": f"a{i}", "source": "t"} for i in range(3)]


def _stage(calls: list[int]):
    def fn(out: Path) -> None:
        calls.append(1)
        write_part(out, "00000", ROWS, "sft")
        write_manifest(out, "sft")
    return fn


def _run_once(root: Path, calls: list[int]) -> None:
    rd = RunDir(root, CFG)
    rd.stage("s", fn=_stage(calls), kind="sft")
    rd.finish()


def test_corrupt_state_then_delete_it_rebuilds_from_manifests(tmp_path: Path) -> None:
    calls: list[int] = []
    _run_once(tmp_path, calls)
    (tmp_path / "state.json").write_text('{"stages": ')
    config_before = (tmp_path / "config.yaml").read_bytes()
    with pytest.raises(StageError, match=r"corrupt run state: .*state\.json:1: malformed JSON.*delete it"):
        RunDir(tmp_path, {**CFG, "seed": 1})       # fails before the config check/rewrite
    with pytest.raises(StageError, match="delete it"):
        load_state(tmp_path)
    assert (tmp_path / "config.yaml").read_bytes() == config_before
    (tmp_path / "state.json").unlink()               # the recovery the message names
    _run_once(tmp_path, calls)
    assert calls == [1]                              # the complete stage was found, not re-run
    assert load_state(tmp_path)["stages"]["iter_0/s"]["status"] == "complete"


def test_corrupt_manifest_then_delete_it_reruns_the_stage(tmp_path: Path) -> None:
    calls: list[int] = []
    _run_once(tmp_path, calls)
    manifest = tmp_path / "iter_0" / "s" / "_MANIFEST.json"
    manifest.write_text(json.dumps({"kind": "sft", "rows": -3}))
    with pytest.raises(StageError, match=r"_MANIFEST\.json: corrupt manifest .*delete .* to re-run"):
        RunDir(tmp_path, CFG)
    manifest.unlink()
    _run_once(tmp_path, calls)
    assert calls == [1, 1]
    assert json.loads(manifest.read_text())["rows"] == 3


def test_corrupt_model_marker_names_the_dir_to_delete(tmp_path: Path) -> None:
    RunDir(tmp_path, CFG).finish()
    marker = tmp_path / "models" / "weak" / "_COMPLETE.json"
    marker.parent.mkdir(parents=True)
    marker.write_bytes(b"\xff\xfe")
    with pytest.raises(StageError, match=rf"corrupt model marker: .*not UTF-8.*delete {marker.parent}"):
        RunDir(tmp_path, CFG)


@pytest.mark.parametrize("layout, message", [
    ({"f": "x"}, r"run_dir: .*f is a file; expected a directory"),
    ({"notes/todo.txt": "mine"}, r"not a raysys output"),
])
def test_run_dir_that_cannot_be_one(tmp_path: Path, layout: dict, message: str) -> None:
    for rel, text in layout.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    target = tmp_path / next(iter(layout)).split("/")[0]
    with pytest.raises(StageError, match=message):
        RunDir(target, CFG)
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        {Path(r).name for r in layout} | {Path(r).parent.name for r in layout if "/" in r})
