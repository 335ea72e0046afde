"""The pure checks behind the hostile-input table: float coercion, YAML keys, Ray addresses,
safetensors headers, output paths."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest

from raysys.config import ConfigError, NonFiniteFloat, _coerce, from_dict
from raysys.config_yaml import load_yaml
from raysys.data.io import DataError, check_output_dir, check_output_file
from raysys.distributed.ray_init import address_endpoint
from raysys.errors import ClusterError, ModelError
from raysys.models.loading import check_model_dir, check_safetensors


@dataclass
class _Opt:
    clip: NonFiniteFloat = NonFiniteFloat(1.0)   # opts in: inf means "no clipping"
    lr: float = 0.1


def test_floats_must_be_finite_unless_the_field_opts_in() -> None:
    assert _coerce("1e-4", float, "lr") == 1e-4 and _coerce(3, float, "lr") == 3.0
    for bad in ("nan", float("inf"), "-inf", "Infinity", float("nan")):
        with pytest.raises(ConfigError, match=r"^a\.lr: expected a finite float"):
            _coerce(bad, float | None, "a.lr")
    assert math.isinf(from_dict(_Opt, {"clip": "inf"}).clip)
    with pytest.raises(ConfigError, match=r"^lr: expected a finite float"):
        from_dict(_Opt, {"clip": "inf", "lr": float("nan")})


def test_duplicate_yaml_keys_name_both_lines_and_merge_keys_are_fine(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n")
    assert load_yaml(p) == {"base": {"x": 1}, "other": {"x": 1, "y": 2}}
    p.write_text("a:\n  b: 1\n  c: 2\n  b: 3\n")
    with pytest.raises(ConfigError, match=rf"^{p}:4: duplicate key 'b' \(first set on line 2\)"):
        load_yaml(p)
    p.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match=rf"^{p}:2: invalid YAML: ") as e:
        load_yaml(p)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("address, endpoint", [
    ("local", None), ("auto", None), ("10.0.0.2:6379", ("10.0.0.2", 6379)),
    ("head", ("head", 6379)), ("ray://head", ("head", 10001)), ("ray://h:1234", ("h", 1234)),
])
def test_address_endpoint(address: str, endpoint: tuple | None) -> None:
    assert address_endpoint(address) == endpoint


@pytest.mark.parametrize("address", ["http://h:8265", "grpc://h:1", "h:port", "h:70000"])
def test_bad_addresses(address: str) -> None:
    with pytest.raises(ClusterError, match=r"^cluster\.address: "):
        address_endpoint(address)


def _safetensors(path: Path, declared_end: int, payload: int) -> Path:
    header = ('{"w": {"dtype": "F32", "shape": [%d], "data_offsets": [0, %d]}}'
              % (declared_end // 4, declared_end)).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * payload)
    return path


def test_safetensors_header_check(tmp_path: Path, tiny_model_dir: Path) -> None:
    check_safetensors(_safetensors(tmp_path / "ok.safetensors", 16, 16))
    with pytest.raises(ModelError, match=r"truncated \(\d+ bytes, its header needs \d+\)"):
        check_safetensors(_safetensors(tmp_path / "short.safetensors", 16, 8))
    (tmp_path / "junk.safetensors").write_bytes(b"\x05\0\0\0\0\0\0\0{xyz}")
    with pytest.raises(ModelError, match="corrupt safetensors header"):
        check_safetensors(tmp_path / "junk.safetensors")
    assert check_model_dir(tiny_model_dir, False, "model.path") == tiny_model_dir


def test_output_path_checks(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "stage").mkdir()
    (tmp_path / "stage" / "_MANIFEST.json").write_text("{}")
    assert check_output_file(tmp_path / "new" / "o.jsonl", "--out") == tmp_path / "new" / "o.jsonl"
    assert check_output_dir(tmp_path / "stage", "--out", ("_MANIFEST.json",)) == tmp_path / "stage"
    with pytest.raises(DataError, match=r"--out: cannot create .*: .*/f is a file"):
        check_output_file(tmp_path / "f" / "deeper" / "o.jsonl", "--out")
    with pytest.raises(DataError, match=r"expected a \.jsonl file"):
        check_output_file(tmp_path / "o.csv", "--out", (".jsonl",))
    assert not (tmp_path / "new").exists()
