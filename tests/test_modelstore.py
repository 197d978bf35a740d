"""The model store on its own: numbered versions, CURRENT, pruning, and what a
crash can leave behind (no gRPC round trip: the layout is what is tested)."""

from __future__ import annotations

import json

import pytest

from server.modelstore import ModelStore, ModelStoreError


def _publish(store: ModelStore, body: bytes, examples: int = 0):
    return store.publish(lambda path: path.write_bytes(body), examples_learned=examples, joined_through=examples,
                         origin="learned", arguments="--ccb_explore_adf")


def test_versions_are_numbered_current_moves_and_old_ones_are_pruned(tmp_path):
    store = ModelStore(tmp_path / "models" / "default", keep=3)
    assert store.current() is None and store.current_version() is None
    infos = [_publish(store, f"model {i}".encode(), examples=10 * i) for i in range(1, 6)]
    assert [i.version for i in infos] == [1, 2, 3, 4, 5]
    assert store.current_version() == 5 and store.current().examples_learned == 50
    assert [i.version for i in store.versions()] == [3, 4, 5]  # keep=3
    assert not store.path(1).exists() and store.path(5).read_bytes() == b"model 5"


def test_rollback_target_is_kept_and_unknown_versions_are_refused(tmp_path):
    store = ModelStore(tmp_path / "m", keep=2)
    for i in range(3):
        _publish(store, bytes([i]))
    assert store.set_current(2).version == 2 and store.current_version() == 2
    _publish(store, b"new")  # version 4; pruning never removes CURRENT's target
    assert store.current_version() == 4
    with pytest.raises(ModelStoreError, match="not kept"):
        store.set_current(1)


def test_a_half_written_metadata_file_is_not_a_version(tmp_path):
    store = ModelStore(tmp_path / "m")
    _publish(store, b"one")
    (store.directory / "v000002.json").write_text('{"version": 2, "sha2')  # torn by a crash
    store.path(2).write_bytes(b"two")
    assert [i.version for i in store.versions()] == [1]
    assert json.loads((store.directory / "v000001.json").read_text())["sha256"] == store.info(1).sha256


def test_files_are_private(tmp_path):
    store = ModelStore(tmp_path / "m")
    _publish(store, b"x")
    for path in (store.directory, store.path(1), store.directory / "CURRENT"):
        assert path.stat().st_mode & 0o077 == 0, path


def test_a_publish_cut_before_its_pointer_moved_is_finished(tmp_path):
    """A crash after a version's file and metadata and before CURRENT moved
    (seen in test_crash: after the restart CURRENT was one below the newest
    listed version): the engine's store finishes it; a checksum that does not
    match leaves CURRENT where it is."""
    store = ModelStore(tmp_path / "m")
    _publish(store, b"one")
    _publish(store, b"two")
    (store.directory / "CURRENT").write_text("1")  # as the crash left it
    assert store.finish_interrupted_publish().version == 2
    assert store.current_version() == 2
    assert store.finish_interrupted_publish() is None  # nothing left to finish
    _publish(store, b"three")
    (store.directory / "CURRENT").write_text("2")
    store.path(3).write_bytes(b"thrEe")  # not what its metadata's checksum says
    assert store.finish_interrupted_publish() is None and store.current_version() == 2
