"""The run store: the driver node's files reached from other nodes through Ray (fetch into a
content-keyed cache, push a dir back atomically, Ray Train's storage as a pyarrow filesystem).

Runs on the package's real 3-node cluster: the store lives on the head (the driver's node) and
tasks pinned to the two worker nodes take the copying path, as on a cluster without a shared
disk (that the nodes here do share one lets the tests compare bytes on both sides)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from raysys.distributed import artifacts, run_store, storage
from raysys.distributed.run_store import list_files, _digest_files

# The task bodies below are sent by value: worker processes cannot import a test module.
import ray.cloudpickle  # noqa: E402
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _tree(root: Path) -> dict[str, str]:
    """``{relative path: sha256}``: compared as digests, so a mismatch of a 40 MB file prints
    two short lines rather than a diff of its bytes."""
    return {rel: _sha((root / rel).read_bytes()) for rel, _ in list_files(root)}


def _sha(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()


def _model_like(d: Path, payload: bytes = b"w" * 3_000_000) -> Path:
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text('{"model_type": "llama"}')
    (d / "model.safetensors").write_bytes(payload)
    (d / "sub" / "empty.txt").write_bytes(b"")
    return d


def test_digest_is_content_not_location(tmp_path: Path) -> None:
    a, b = _model_like(tmp_path / "a"), _model_like(tmp_path / "b")
    da, db = _digest_files(a, list_files(a)), _digest_files(b, list_files(b))
    assert da == db
    (b / "config.json").write_text('{"model_type": "llamb"}')    # same size, other bytes
    assert _digest_files(b, list_files(b)) != da
    (b / "config.json").rename(b / "config2.json")
    assert _digest_files(b, list_files(b)) not in (da,)


def test_without_a_store_everything_is_local(tmp_path: Path) -> None:
    assert artifacts.localize(str(tmp_path)) == str(tmp_path)
    artifacts.append_text(tmp_path / "m" / "metrics.jsonl", "a\n")
    artifacts.append_text(tmp_path / "m" / "metrics.jsonl", "b\n")
    assert artifacts.read_text(tmp_path / "m" / "metrics.jsonl") == "a\nb\n"
    src = _model_like(tmp_path / "src")
    want = _tree(src)
    artifacts.push_dir(src, tmp_path / "out" / "model")
    assert _tree(tmp_path / "out" / "model") == want and not src.exists()


def test_chunks_written_in_any_order_make_the_whole_file(tmp_path: Path) -> None:
    # A file's chunks reach the threaded store actor as concurrent calls: the one at offset 0
    # may run last, and must not empty what the others wrote.
    s = run_store.RunStore([str(tmp_path)])
    f = tmp_path / "d" / "model.safetensors"
    s.write(str(f), b"CC", 4)
    s.write(str(f), b"BB", 2)
    s.write(str(f), b"AA", 0)
    assert f.read_bytes() == b"AABBCC"
    s.write(str(f), b"x", 0, replace=True)        # a whole-file rewrite (write_text)
    assert f.read_bytes() == b"x"


def _on(node: str, env: dict[str, str], fn: Any, *args: Any) -> Any:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(fn).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False),
        runtime_env={"env_vars": env})
    return ray.get(task.remote(*args), timeout=120)


def _localize(path: str) -> tuple[str, dict[str, bytes], float]:
    from raysys.distributed import artifacts as rs
    local = rs.localize(path)
    root = Path(local)
    return local, _tree(root), (root.parent / f"{root.name}{rs.COMPLETE}").stat().st_mtime


def _push(src_files: dict[str, bytes], dest: str) -> None:
    import tempfile

    from raysys.distributed import artifacts as rs
    with tempfile.TemporaryDirectory() as d:
        for rel, data in src_files.items():
            (Path(d) / "m" / rel).parent.mkdir(parents=True, exist_ok=True)
            (Path(d) / "m" / rel).write_bytes(data)
        rs.push_dir(Path(d) / "m", dest)


def _fs_roundtrip(local_dir: str, dest: str) -> list[str]:
    import pyarrow.fs as pafs

    from raysys.distributed.store_fs import storage_filesystem
    fs = storage_filesystem()
    pafs.copy_files(local_dir, dest, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs, chunk_size=1 << 20)
    names = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(dest, recursive=True)))
    with fs.open_input_stream(f"{dest}/config.json") as f:
        assert f.read() == b'{"model_type": "llama"}'
    with fs.open_output_stream(f"{dest}/state.json") as f:
        f.write(b'{"step": 3}')
    return names


def _run_files(path: str) -> str | None:
    from raysys.distributed import artifacts as rs
    rs.write_text(path, "x\n")
    rs.append_text(path, "y\n")
    return rs.read_text(path)


@pytest.fixture
def store(ray_cluster: dict[str, str], tmp_path: Path):
    run_store.start_store([tmp_path / "run", tmp_path / "model"])
    try:
        yield ray_cluster
    finally:
        run_store.stop_store()


def test_fetch_once_per_node_into_a_content_keyed_cache(store: dict[str, str], tmp_path: Path) -> None:
    model = _model_like(tmp_path / "model")
    want = _tree(model)
    env_a = {artifacts.CACHE_ENV: str(tmp_path / "cache_a")}
    local, got, marked = _on(store["node_a"], env_a, _localize, str(model))
    assert got == want
    assert Path(local).parent == tmp_path / "cache_a" and Path(local) != model
    # Again on the same node: the cached copy, not a second fetch (its marker is unchanged).
    local2, _, marked2 = _on(store["node_a"], env_a, _localize, str(model))
    assert (local2, marked2) == (local, marked)
    # The other node fetches its own copy; new content is a new entry.
    env_b = {artifacts.CACHE_ENV: str(tmp_path / "cache_b")}
    (model / "model.safetensors").write_bytes(b"v" * 3_000_000)
    local_b, got_b, _ = _on(store["node_b"], env_b, _localize, str(model))
    assert got_b == _tree(model) and Path(local_b).name != Path(local).name
    # A path outside what the run serves is not read through the store: returned as given.
    outside = _model_like(tmp_path / "elsewhere")
    assert _on(store["node_a"], env_a, artifacts.localize, str(outside)) == str(outside)


def test_push_dir_lands_whole_on_the_drivers_node(store: dict[str, str], tmp_path: Path) -> None:
    files = {"config.json": b"{}", "model.safetensors": os.urandom(40 << 20), "d/e.txt": b""}
    dest = tmp_path / "run" / "models" / "sft"
    _on(store["node_b"], {}, _push, files, str(dest))
    assert _tree(dest) == {rel: _sha(data) for rel, data in files.items()}
    assert [p.name for p in dest.parent.iterdir()] == ["sft"]      # no temp dir left behind
    # Pushed again (a stage re-run): replaced whole, not merged.
    _on(store["node_b"], {}, _push, {"config.json": b"{1}"}, str(dest))
    assert _tree(dest) == {"config.json": _sha(b"{1}")}


def test_ray_train_storage_through_the_store(store: dict[str, str], tmp_path: Path) -> None:
    model = _model_like(tmp_path / "model")
    dest = tmp_path / "run" / "ray_train" / "ckpt"
    names = _on(store["node_a"], {}, _fs_roundtrip, str(model), str(dest))
    assert {Path(n).relative_to(dest).as_posix() for n in names} >= {"config.json", "model.safetensors", "sub/empty.txt"}
    assert _tree(dest) == {**_tree(model), "state.json": _sha(b'{"step": 3}')}
    assert not list(dest.glob("*.part-*"))


def test_run_files_and_refusals(store: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "run" / "files" / "metrics.jsonl"
    assert _on(store["node_a"], {}, _run_files, str(path)) == "x\ny\n"
    assert path.read_text() == "x\ny\n"
    import ray
    h = run_store.store()
    with pytest.raises(ray.exceptions.RayTaskError, match="not under a directory this run serves"):
        ray.get(h.read.remote("/etc/passwd", 0, 10))


def test_probe_on_nodes_that_share_the_disk(store: dict[str, str], tmp_path: Path) -> None:
    model = _model_like(tmp_path / "model")
    assert storage.unshared(tmp_path / "run", [model]) == {}
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(storage.PROBE_PREFIX)]
