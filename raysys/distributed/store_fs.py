"""Ray Train's storage through the run store: a pyarrow filesystem whose paths are paths on the
driver's node, so checkpoints and Ray Train's state live in the driver's run dir and a stage
resumes from them whichever node its workers land on."""

from __future__ import annotations

import uuid
from typing import Any

import pyarrow.fs

from raysys.distributed.run_store import CHUNK, StoreError, store


class _StoreWriter:
    """A write-only file object for pyarrow: buffered chunks to a temp name, renamed on close."""

    def __init__(self, h: Any, path: str, append: bool) -> None:
        import ray

        self._h, self._path, self.closed = h, path, False
        self._tmp = f"{path}.part-{uuid.uuid4().hex[:8]}"
        self._buf = bytearray()
        self._off = 0
        if append:
            st = ray.get(h.stat.remote(path))
            if st is not None:
                ray.get(h.copy.remote(path, self._tmp))
                self._off = st[1]

    def write(self, data: Any) -> int:
        self._buf += bytes(data)
        if len(self._buf) >= CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        import ray

        if self._buf or self._off == 0:
            ray.get(self._h.write.remote(self._tmp, bytes(self._buf), self._off))
            self._off += len(self._buf)
            self._buf.clear()

    def tell(self) -> int:
        return self._off + len(self._buf)

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        import ray

        if self.closed:
            return
        self.flush()
        ray.get(self._h.move.remote(self._tmp, self._path))
        self.closed = True


class StoreFSHandler(pyarrow.fs.FileSystemHandler):
    """pyarrow ``FileSystemHandler`` whose paths are paths on the driver's node (the store's)."""

    def __init__(self, handle: Any) -> None:
        self._h = handle

    def __reduce__(self) -> tuple:
        return (StoreFSHandler, (self._h,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StoreFSHandler) and other._h == self._h

    def __ne__(self, other: object) -> bool:
        return not self == other

    def get_type_name(self) -> str:
        return "raysys-run-store"

    def normalize_path(self, path: str) -> str:
        return path

    def _info(self, path: str, st: tuple | None) -> Any:
        import pyarrow.fs as pafs
        if st is None:
            return pafs.FileInfo(path, pafs.FileType.NotFound)
        kind = pafs.FileType.Directory if st[0] == "dir" else pafs.FileType.File
        return pafs.FileInfo(path, kind, size=st[1] if st[0] == "file" else None,
                             mtime=st[2])

    def get_file_info(self, paths: list[str]) -> list[Any]:
        import ray
        return [self._info(p, s) for p, s in zip(paths, ray.get([self._h.stat.remote(p) for p in paths]))]

    def get_file_info_selector(self, selector: Any) -> list[Any]:
        import ray
        items = ray.get(self._h.listdir.remote(selector.base_dir, selector.recursive))
        if items is None:
            if selector.allow_not_found:
                return []
            raise FileNotFoundError(selector.base_dir)
        return [self._info(p, (k, s, m)) for p, k, s, m in items]

    def create_dir(self, path: str, recursive: bool) -> None:
        import ray
        ray.get(self._h.mkdir.remote(path))

    def delete_dir(self, path: str) -> None:
        import ray
        ray.get(self._h.remove.remote(path))

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        import ray
        if ray.get(self._h.stat.remote(path)) is None:
            if missing_dir_ok:
                return
            raise FileNotFoundError(path)
        ray.get(self._h.clear.remote(path))

    def delete_root_dir_contents(self) -> None:
        raise StoreError("refusing to delete the root of the driver's node")

    def delete_file(self, path: str) -> None:
        import ray
        ray.get(self._h.remove.remote(path))

    def move(self, src: str, dest: str) -> None:
        import ray
        ray.get(self._h.move.remote(src, dest))

    def copy_file(self, src: str, dest: str) -> None:
        import ray
        ray.get(self._h.copy.remote(src, dest))

    def _read_all(self, path: str) -> Any:
        import pyarrow as pa
        import ray
        st = ray.get(self._h.stat.remote(path))
        if st is None or st[0] != "file":
            raise FileNotFoundError(path)
        offsets = list(range(0, st[1], CHUNK))
        data = b"".join(ray.get([self._h.read.remote(path, o, CHUNK) for o in offsets]))
        return pa.BufferReader(data)

    def open_input_stream(self, path: str) -> Any:
        return self._read_all(path)

    def open_input_file(self, path: str) -> Any:
        return self._read_all(path)

    def open_output_stream(self, path: str, metadata: Any = None) -> Any:
        import pyarrow as pa
        return pa.PythonFile(_StoreWriter(self._h, path, append=False), mode="w")

    def open_append_stream(self, path: str, metadata: Any = None) -> Any:
        import pyarrow as pa
        return pa.PythonFile(_StoreWriter(self._h, path, append=True), mode="w")


def storage_filesystem() -> Any:
    """A pyarrow filesystem over this driver's store (Ray Train's ``storage_filesystem``), or
    None without a store."""
    h = store()
    if h is None:
        return None
    return pyarrow.fs.PyFileSystem(StoreFSHandler(h))
