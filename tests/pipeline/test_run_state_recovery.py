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


def test_damaged_stage_data_then_delete_the_stage_rebuilds_it(tmp_path: Path) -> None:
    """A complete stage whose part is gone, changed or joined by another part is refused on
    resume and by status (never skipped as complete); deleting the stage dir rebuilds it."""
    import shutil

    calls: list[int] = []
    _run_once(tmp_path, calls)
    stage = tmp_path / "iter_0" / "s"
    part = stage / "part-00000.parquet"
    good = part.read_bytes()
    for damage, message in [
        (lambda: part.unlink(), r"part-00000\.parquet is gone \(the manifest lists it\)"),
        (lambda: part.write_bytes(good[:-1] + bytes([good[-1] ^ 1])), r"does not match its checksum"),
        (lambda: shutil.copy(part, stage / "part-00001.parquet"), r"part-00001\.parquet not in _MANIFEST"),
    ]:
        damage()
        with pytest.raises(StageError, match=rf"^damaged run data: .*{message}.*delete .*iter_0/s"):
            RunDir(tmp_path, CFG)
        with pytest.raises(StageError, match=rf"^damaged run data: .*{message}.*rebuild stage iter_0/s"):
            load_state(tmp_path)
        (stage / "part-00001.parquet").unlink(missing_ok=True)
        part.write_bytes(good)
    assert load_state(tmp_path)["stages"]["iter_0/s"]["status"] == "complete"
    part.unlink()
    shutil.rmtree(stage)                                   # the recovery the message names
    _run_once(tmp_path, calls)
    assert calls == [1, 1] and part.read_bytes() == good


@pytest.mark.parametrize("state, message", [
    ({"stages": {"iter_0/s": {"seconds": -1}}}, r"stages\['iter_0/s'\]\.seconds: expected a finite number"),
    ({"stages": {"iter_0/s": {"seconds": float("inf")}}}, r"\.seconds: expected a finite number"),
    ({"stages": {"iter_0/s": {"rows": 1.5}}}, r"\.rows: expected an integer >= 0 or null, got 1\.5"),
    ({"stages": {"iter_0/s": {"status": "done"}}}, r"\.status: expected one of running, complete, failed"),
    ({"stages": {"iter_0/s": {"metrics": [1]}}}, r"\.metrics: expected an object"),
    ({"stages": {"iter_0/s": {"metrics": {"engine_s": float("nan")}}}}, r"\.metrics\.engine_s: expected"),
    ({"stages": {"/etc/x": {}}}, r"stages\['/etc/x'\]: expected a stage key"),
    ({"runs": [{"pid": "me"}]}, r"runs\[0\]\.pid: expected a process id or null"),
    ({"runs": [{"start": 5}]}, r"runs\[0\]\.start: expected text or null"),
])
def test_state_fields_are_checked(state: dict, message: str) -> None:
    from raysys.pipeline.run_dir import state_problem

    assert state_problem({"stages": {"iter_0/s": {"status": "complete", "seconds": 1.0, "rows": 3,
                                                  "metrics": {"loss": float("nan")}}},
                          "runs": [{"start": "t", "end": None, "pid": 12, "host": "h"}]}) is None
    import re
    assert re.search(message, state_problem(state) or "")
