"""Atomic writes: a failure leaves neither a partial file nor a temporary file behind."""

from __future__ import annotations

import json

import pytest

from anomalib_lite.utils.io import atomic_open, write_json


def test_write_json_is_strict_and_complete(tmp_path):
    path = write_json(tmp_path / "r.json", {"a": float("nan"), "b": [1.0, float("inf")]})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None]}


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"old": 1})
    with pytest.raises(RuntimeError), atomic_open(path) as handle:
        handle.write('{"new": ')
        raise RuntimeError("interrupted")
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
