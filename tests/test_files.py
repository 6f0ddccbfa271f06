"""Atomic folder writes: a model conversion, an export, the offline task folder appear whole or not at all."""

from __future__ import annotations

import pytest

from whatmatters.files import atomic_folder


def test_a_folder_appears_only_when_its_block_ends_and_a_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out" / "model"
    with atomic_folder(target) as tmp:
        (tmp / "weights").write_text("w")
        assert not target.exists()
    assert (target / "weights").read_text() == "w"
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "out" / "broken") as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model"]  # no half folder, no temp


def test_replace_overwrites_an_export_and_a_cache_keeps_the_first_writers_folder(tmp_path):
    target = tmp_path / "folder"
    for text in ("first", "second"):
        with atomic_folder(target) as tmp:
            (tmp / "file").write_text(text)
    assert (target / "file").read_text() == "second"
    with atomic_folder(target, replace=False) as tmp:  # a concurrent writer got there first
        (tmp / "file").write_text("third")
    assert (target / "file").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]
