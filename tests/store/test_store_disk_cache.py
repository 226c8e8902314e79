"""DiskCache bookkeeping with a fake fetch: budget, LRU order, pinning, single-flight, checksums, restart."""

from __future__ import annotations

import gc
import threading

import pytest

from gpu_engine.cache_stats import CacheStats
from gpu_engine.errors import AdapterChecksumError, AdapterNotFoundError, AdapterUnavailableError
from gpu_engine.store import DiskCache
from gpu_engine.adapter_files import adapter_checksum

UNIT_BYTES = 10_000  # one unit of weights; an entry also holds a 2-byte config and ~120 bytes of entry.json
BUDGET_BYTES = 35_000  # three one-unit entries fit, four do not


def writer(units: int = 1, fill: bytes = b"w"):
    """A fetch that writes an adapter of `units` units; records each call."""
    calls = []

    def fetch(dest):
        calls.append(dest)
        (dest / "adapter_config.json").write_text("{}")
        (dest / "adapter_model.safetensors").write_bytes(fill * (units * UNIT_BYTES))

    fetch.calls = calls
    return fetch


def use(cache, name, units=1):
    with cache.checkout(f"s3://b/{name}", 1, "", writer(units)) as path:
        assert (path / "adapter_model.safetensors").stat().st_size == units * UNIT_BYTES


def names(cache):
    return [location.rsplit("/", 1)[-1] for location, _ in cache.keys()]


@pytest.fixture
def stats():
    return CacheStats()


@pytest.mark.parametrize(
    ("uses", "resident"),
    [
        (["a", "b", "c"], ["a", "b", "c"]),
        (["a", "b", "c", "d"], ["b", "c", "d"]),
        (["a", "b", "c", "a", "d"], ["c", "a", "d"]),
        (["a", "b", "c", "a", "b", "d"], ["a", "b", "d"]),
        (["a", "b", "c", "c", "c", "d", "e"], ["c", "d", "e"]),
        (["a", "big", "b"], ["b"]),  # an entry over the whole budget is served, then dropped
        (["a", "b", "big", "c"], ["c"]),
    ],
)
def test_least_recently_used_is_evicted_first(tmp_path, stats, uses, resident):
    cache = DiskCache(tmp_path, BUDGET_BYTES, stats)
    for name in uses:
        use(cache, name, units=5 if name == "big" else 1)
    assert names(cache) == resident
    assert cache.num_bytes <= BUDGET_BYTES
    on_disk = sorted(p.parent.parent.name.split("-")[0] for p in tmp_path.glob("*/1/adapter_model.safetensors"))
    assert on_disk == sorted(resident)
    snap = stats.snapshot()["disk"]
    assert snap.misses == len(set(uses)) and snap.hits == len(uses) - len(set(uses))
    assert snap.evictions == len(set(uses)) - len(resident)
    assert (snap.bytes, snap.entries, snap.loads) == (cache.num_bytes, len(resident), len(set(uses)))


def test_checked_out_entry_is_never_evicted(tmp_path, stats):
    cache = DiskCache(tmp_path, UNIT_BYTES + 500, stats)  # room for one entry
    with cache.checkout("s3://b/a", 1, "", writer()) as a_path:
        with cache.checkout("s3://b/b", 1, "", writer()) as b_path:
            assert names(cache) == ["a", "b"]  # over budget while both are pinned
        assert not b_path.exists()  # released: the only unpinned entry, so the one evicted
        assert (a_path / "adapter_model.safetensors").read_bytes() == b"w" * UNIT_BYTES
    assert names(cache) == ["a"]


def test_concurrent_checkouts_download_once(tmp_path, stats):
    cache = DiskCache(tmp_path, None, stats)
    go = threading.Event()
    fetch = writer()

    def slow_fetch(dest):
        assert go.wait(timeout=10)
        fetch(dest)

    num_threads = 8
    ready = threading.Barrier(num_threads + 1)
    paths, errors = [], []

    def worker():
        ready.wait()
        try:
            with cache.checkout("s3://b/a", 3, "", slow_fetch) as path:
                paths.append(path)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(num_threads)]
    for thread in threads:
        thread.start()
    ready.wait()
    go.set()
    for thread in threads:
        thread.join(timeout=10)
    assert not errors and len(paths) == num_threads and len(set(paths)) == 1
    assert len(fetch.calls) == 1
    snap = stats.snapshot()["disk"]
    assert (snap.misses, snap.hits, snap.loads) == (1, num_threads - 1, 1)


def test_callers_waiting_on_a_failed_download_get_its_error(tmp_path, stats):
    cache = DiskCache(tmp_path, None, stats)
    go = threading.Event()

    def failing_fetch(dest):
        assert go.wait(timeout=10)
        raise AdapterNotFoundError("s3://b/a not found")

    errors = []

    def worker():
        try:
            with cache.checkout("s3://b/a", 1, "", failing_fetch):
                pass
        except Exception as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join(timeout=10)
    assert len(errors) == 4 and all(type(e) is AdapterNotFoundError for e in errors)
    assert cache.keys() == [] and not list(tmp_path.glob(".tmp-*"))


def test_local_write_failure_is_unavailable(tmp_path, stats):
    def fetch(dest):
        raise OSError(28, "No space left on device")

    with pytest.raises(AdapterUnavailableError, match="No space left"):
        with DiskCache(tmp_path, None, stats).checkout("s3://b/a", 1, "", fetch):
            pass
    assert not list(tmp_path.glob(".tmp-*"))


def test_download_is_verified_against_the_checksum(tmp_path, stats):
    cache = DiskCache(tmp_path, None, stats)
    reference = tmp_path / "reference"
    reference.mkdir()
    writer()(reference)
    good = adapter_checksum(reference)
    with pytest.raises(AdapterChecksumError):
        with cache.checkout("s3://b/a", 1, "0" * 64, writer()):
            pass
    assert cache.keys() == [] and not list(tmp_path.glob(".tmp-*"))
    with cache.checkout("s3://b/a", 1, good, writer()) as path:
        assert adapter_checksum(path) == good


def test_stale_copy_is_fetched_again_when_the_checksum_changes(tmp_path, stats):
    cache = DiskCache(tmp_path, None, stats)
    with cache.checkout("s3://b/a", 1, "", writer(fill=b"o")):
        pass
    new = writer(fill=b"n")
    reference = tmp_path / "reference"
    reference.mkdir()
    new(reference)
    with cache.checkout("s3://b/a", 1, adapter_checksum(reference), new) as path:
        assert (path / "adapter_model.safetensors").read_bytes()[:1] == b"n"
        with pytest.raises(AdapterChecksumError, match="in use"):  # cannot replace a pinned copy
            with cache.checkout("s3://b/a", 1, "f" * 64, writer()):
                pass
    assert len(new.calls) == 2 and len(cache.keys()) == 1


def test_a_restarted_cache_adopts_complete_copies(tmp_path, stats):
    first = DiskCache(tmp_path, None, stats)
    for name in ("a", "b", "c"):
        use(first, name)
    (tmp_path / ".tmp-leftover").mkdir()
    second = DiskCache(tmp_path, 2 * UNIT_BYTES + 1000, CacheStats())  # smaller budget: the oldest goes
    assert names(second) == ["b", "c"]
    assert not (tmp_path / ".tmp-leftover").exists()
    fetch = writer()
    with second.checkout("s3://b/c", 1, "", fetch):
        pass
    assert fetch.calls == []


def test_default_directory_is_temporary(stats):
    cache = DiskCache(None, None, stats)
    use(cache, "a")
    directory = cache.directory
    assert directory.is_dir()
    del cache
    gc.collect()
    assert not directory.exists()
