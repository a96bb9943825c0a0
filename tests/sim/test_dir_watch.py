"""The inotify watch that tells the simulated libvirt store's readers whether to look at
its files again."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from planner.sim import libvirt_store
from planner.sim.dir_watch import DirWatch


def _watch(*dirs: Path, ignore: tuple[str, ...] = ()) -> DirWatch:
    watch = DirWatch.start(list(dirs), ignore=ignore)
    if watch is None:
        pytest.skip("no inotify here")
    return watch


def test_a_quiet_directory_is_unchanged_and_any_change_sticks(tmp_path: Path) -> None:
    (tmp_path / "a.xml").write_text("one")
    watch = _watch(tmp_path)
    assert (tmp_path / "a.xml").read_text() == "one"  # reading is no change
    assert not watch.changed()
    (tmp_path / "b.xml").write_text("two")
    assert watch.changed()
    assert watch.changed()  # sticky: a second caller (another thread) learns it too
    watch.close()
    assert watch.changed()  # a closed watch knows nothing: look at the files


@pytest.mark.parametrize("change", ["edit in place", "rename over", "remove", "chmod"])
def test_every_kind_of_change_of_a_file_is_seen(tmp_path: Path, change: str) -> None:
    path = tmp_path / "vm.xml"
    path.write_text("<domain/>")
    watch = _watch(tmp_path)
    if change == "edit in place":  # same inode, same size
        with open(path, "r+") as f:
            f.write("<domaiN/>")
    elif change == "rename over":
        (tmp_path / ".tmp").write_text("<x/>")
        (tmp_path / ".tmp").replace(path)
    elif change == "remove":
        path.unlink()
    else:
        path.chmod(0o600)
    assert watch.changed()
    watch.close()


def test_a_removed_directory_and_the_ignored_lock_file(tmp_path: Path) -> None:
    sub = tmp_path / "domains"
    sub.mkdir()
    watch = _watch(tmp_path, sub, tmp_path / "absent", ignore=(".lock",))
    with open(tmp_path / ".lock", "a"):  # opened for writing to be flock()ed, as readers do
        pass
    assert not watch.changed()
    shutil.rmtree(sub)
    assert watch.changed()
    watch.close()


def test_the_store_is_listed_again_only_after_a_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While nothing in the store changed, a snapshot is reused without a stat of each
    file; a hand edit in place that keeps the size is still seen."""
    domains = tmp_path / "libvirt" / "domains"
    domains.mkdir(parents=True)
    path = domains / "vm.xml"
    path.write_text("<domain><name>vm</name><memory>1</memory></domain>")
    first = libvirt_store.store_snapshot(tmp_path)
    if first.watch is None:
        pytest.skip("no inotify here")
    listed: list[Path] = []
    real = libvirt_store._listing

    def counted(store: Path) -> libvirt_store._Listing:
        listed.append(store)
        return real(store)

    monkeypatch.setattr(libvirt_store, "_listing", counted)
    assert libvirt_store.store_snapshot(tmp_path) is first
    assert libvirt_store.store_snapshot(tmp_path) is first
    assert listed == []
    with open(path, "r+") as f:  # same inode and size, maybe the same clock tick
        f.write("<domain><name>vm</name><memory>2</memory></domain>")
    (rec,) = libvirt_store.store_snapshot(tmp_path).records
    assert "<memory>2</memory>" in (rec.persistent_xml or "")
    assert len(listed) == 1


def test_a_snapshot_evicted_while_its_watch_is_renewed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another thread may evict or replace the store's snapshot while this one lists the
    store to renew the snapshot's watch: the read still answers, and the new watch, which
    nothing owns then, is closed rather than left open."""
    domains = tmp_path / "libvirt" / "domains"
    domains.mkdir(parents=True)
    (domains / "vm.xml").write_text("<domain><name>vm</name><memory>1</memory></domain>")
    first = libvirt_store.store_snapshot(tmp_path)
    if first.watch is None:
        pytest.skip("no inotify here")
    first.watch.close()  # says "changed": the store is listed again, and found the same
    made: list[DirWatch] = []
    real_start = DirWatch.start.__func__  # type: ignore[attr-defined]

    def start(cls: type[DirWatch], *args: object, **kwargs: object) -> DirWatch | None:
        watch = real_start(cls, *args, **kwargs)
        made.append(watch)
        return watch

    real_listing = libvirt_store._listing

    def evicted_meanwhile(store: Path) -> libvirt_store._Listing:
        with libvirt_store._SNAPSHOTS_LOCK:
            libvirt_store._SNAPSHOTS.pop(store, None)
        return real_listing(store)

    monkeypatch.setattr(DirWatch, "start", classmethod(start))
    monkeypatch.setattr(libvirt_store, "_listing", evicted_meanwhile)
    assert libvirt_store.store_snapshot(tmp_path) is first
    (renewed,) = made
    assert first.watch is not renewed
    assert renewed.changed()  # closed: it owns no descriptor any more
