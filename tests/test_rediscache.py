"""Tests of labsupport.scaleout.cache: the fallback always, a real Redis when one can be started."""

from __future__ import annotations

import io
import sys
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import free_port

from labsupport.data import demo_ratings
from labsupport.recommender import Model, build_model, recommend
from labsupport.scaleout import cache as rediscache
from labsupport.scaleout.cache import MemoryCache, RedisCache, model_from_bytes, model_to_bytes


def _build(version: int) -> Model:
    return build_model(demo_ratings(n_users=20, seed=0), rank=6, version=version)


@pytest.fixture(scope="module")
def model() -> Model:
    return _build(1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- serialisation


def test_model_round_trips_through_bytes(model: Model) -> None:
    back = model_from_bytes(model_to_bytes(model))
    for name in ("user_ids", "movie_ids", "user_factors", "item_factors", "popular"):
        np.testing.assert_array_equal(getattr(back, name), getattr(model, name))
    assert (back.rated != model.rated).nnz == 0
    assert back.summary() == model.summary()
    assert all(recommend(back, u, 5) == recommend(model, u, 5) for u in range(1, 21))
    assert not back.item_factors.flags.writeable  # still an immutable model


def test_model_bytes_are_loadable_without_pickle(model: Model) -> None:
    with np.load(io.BytesIO(model_to_bytes(model)), allow_pickle=False) as archive:
        assert "meta" in archive.files
        assert all(archive[name].dtype != object for name in archive.files)


def test_model_from_bytes_refuses_pickled_objects() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array([{"format": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a cached model"):
        model_from_bytes(buffer.getvalue())


@pytest.mark.parametrize("data", [b"", b"not a zip archive"])
def test_model_from_bytes_refuses_garbage(data: bytes) -> None:
    with pytest.raises(ValueError, match="rebuild the model instead"):
        model_from_bytes(data)


def test_model_from_bytes_refuses_unknown_format(model: Model) -> None:
    with np.load(io.BytesIO(model_to_bytes(model)), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["meta"] = np.array(str(arrays["meta"]).replace('"format": 1', '"format": 99'))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with pytest.raises(ValueError, match="format 99"):
        model_from_bytes(buffer.getvalue())


# ---------------------------------------------------------------- connect() fallback


def test_connect_falls_back_when_no_server_answers() -> None:
    cache = rediscache.connect(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    assert isinstance(cache, MemoryCache)
    assert cache.backend == "memory"
    assert "no Redis answered" in cache.reason
    assert "\n" not in cache.reason


def test_connect_falls_back_without_the_redis_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # makes `import redis` raise ImportError
    cache = rediscache.connect()
    assert isinstance(cache, MemoryCache)
    assert "not installed" in cache.reason


def test_connect_falls_back_on_a_malformed_url() -> None:
    cache = rediscache.connect("http://127.0.0.1:1/0")
    assert isinstance(cache, MemoryCache)


def test_connect_reason_never_shows_a_password() -> None:
    cache = rediscache.connect(f"redis://user:s3cret@127.0.0.1:{free_port()}/2")
    assert "s3cret" not in cache.reason
    assert "db 2" in cache.reason


def test_fallback_keeps_the_options() -> None:
    cache = rediscache.connect(
        f"redis://127.0.0.1:{free_port()}/0", prefix="p", task_ttl=5, old_model_ttl=7
    )
    assert (cache.prefix, cache.task_ttl, cache.old_model_ttl) == ("p", 5, 7)


# ---------------------------------------------------------------- MemoryCache


def test_memory_cache_starts_empty() -> None:
    cache = MemoryCache()
    assert cache.load_model() is None
    assert cache.current_version() is None
    assert cache.get_task("task-1") is None


def test_memory_cache_saves_and_loads_the_current_model(model: Model) -> None:
    cache = MemoryCache()
    assert cache.save_model(model) == "labsupport:model:1"
    assert cache.current_version() == 1
    loaded = cache.load_model()
    assert loaded is not None
    assert recommend(loaded, 3, 5) == recommend(model, 3, 5)


def test_memory_cache_moves_the_pointer_and_expires_the_old_version(model: Model) -> None:
    clock = FakeClock()
    cache = MemoryCache(old_model_ttl=60, clock=clock)
    cache.save_model(model)
    cache.save_model(_build(2))
    assert cache.current_version() == 2
    assert "labsupport:model:1" in set(cache.keys())
    clock.now += 61
    assert cache.keys() == ["labsupport:model:2", "labsupport:model:current"]
    loaded = cache.load_model()
    assert loaded is not None and loaded.version == 2


def test_memory_cache_resaving_a_version_keeps_it(model: Model) -> None:
    clock = FakeClock()
    cache = MemoryCache(old_model_ttl=1, clock=clock)
    cache.save_model(model)
    cache.save_model(model)
    clock.now += 10
    assert cache.load_model() is not None


def test_memory_cache_tasks_expire() -> None:
    clock = FakeClock()
    cache = MemoryCache(task_ttl=30, clock=clock)
    cache.save_task({"task_id": "t1", "status": "interrupted", "error": "stopped"})
    assert cache.get_task("t1") == {"task_id": "t1", "status": "interrupted", "error": "stopped"}
    clock.now += 31
    assert cache.get_task("t1") is None


def test_memory_cache_pointer_to_an_expired_model_means_none(model: Model) -> None:
    clock = FakeClock()
    cache = MemoryCache(old_model_ttl=5, clock=clock)
    cache.save_model(model)
    cache._expire("labsupport:model:1", 5)  # as if evicted
    clock.now += 6
    assert cache.current_version() == 1
    assert cache.load_model() is None


def test_save_task_needs_a_task_id() -> None:
    with pytest.raises(ValueError, match="task_id"):
        MemoryCache().save_task({"status": "queued"})


def test_ttls_must_be_positive() -> None:
    with pytest.raises(ValueError, match="task_ttl"):
        MemoryCache(task_ttl=0)
    with pytest.raises(ValueError, match="old_model_ttl"):
        MemoryCache(old_model_ttl=-1)


def test_memory_caches_share_nothing(model: Model) -> None:
    one, two = MemoryCache(), MemoryCache()
    one.save_model(model)
    assert two.load_model() is None


def test_cache_is_a_context_manager() -> None:
    with MemoryCache(prefix="x") as cache:
        assert repr(cache) == "<MemoryCache prefix='x'>"


# ---------------------------------------------------------------- a real Redis


# `redis_url` (a throwaway redis-server, or a skip) comes from tests/conftest.py.


@pytest.fixture
def redis_cache(redis_url: str) -> Iterator[RedisCache]:
    cache = rediscache.connect(redis_url, prefix=f"test-{uuid.uuid4().hex[:8]}")
    assert isinstance(cache, RedisCache), cache.reason
    yield cache
    cache.close()


def test_connect_returns_a_redis_cache(redis_cache: RedisCache) -> None:
    assert redis_cache.backend == "redis"
    assert redis_cache.reason.startswith("connected to Redis at 127.0.0.1:")


def test_redis_model_round_trip_and_pointer(redis_cache: RedisCache, model: Model) -> None:
    assert redis_cache.load_model() is None
    key = redis_cache.save_model(model)
    assert key == f"{redis_cache.prefix}:model:1"
    assert redis_cache.client.ttl(key) == -1  # the current version does not expire
    loaded = redis_cache.load_model()
    assert loaded is not None
    assert recommend(loaded, 5, 5) == recommend(model, 5, 5)


def test_redis_old_version_expires(redis_url: str, model: Model) -> None:
    with rediscache.connect(redis_url, prefix=f"t-{uuid.uuid4().hex[:8]}", old_model_ttl=0.2) as c:
        assert isinstance(c, RedisCache)
        c.save_model(model)
        c.save_model(_build(2))
        assert c.current_version() == 2
        old = f"{c.prefix}:model:1"
        assert 0 < c.client.pttl(old) <= 200
        time.sleep(0.4)
        assert not c.client.exists(old)
        loaded = c.load_model()
        assert loaded is not None and loaded.version == 2


def test_redis_tasks_are_json_with_expiry(redis_cache: RedisCache) -> None:
    task = {"task_id": "t1", "status": "complete", "model_version": 3, "error": None}
    redis_cache.save_task(task)
    assert redis_cache.get_task("t1") == task
    assert 0 < redis_cache.client.ttl(f"{redis_cache.prefix}:task:t1") <= 24 * 3600
    assert redis_cache.get_task("t2") is None


def test_redis_is_shared_between_connections(redis_url: str, model: Model) -> None:
    prefix = f"shared-{uuid.uuid4().hex[:8]}"
    with rediscache.connect(redis_url, prefix=prefix) as one:
        one.save_model(model)
        one.save_task({"task_id": "t9", "status": "interrupted"})
    with rediscache.connect(redis_url, prefix=prefix) as two:
        assert two.backend == "redis"
        assert two.current_version() == 1
        assert two.get_task("t9") == {"task_id": "t9", "status": "interrupted"}


def test_both_backends_answer_alike(redis_cache: RedisCache, model: Model) -> None:
    memory = MemoryCache(prefix=redis_cache.prefix)
    for cache in (memory, redis_cache):
        cache.save_model(model)
        cache.save_model(_build(2))
        cache.save_task({"task_id": "a", "status": "queued"})
    assert memory.current_version() == redis_cache.current_version() == 2
    assert memory.get_task("a") == redis_cache.get_task("a")
    m, r = memory.load_model(), redis_cache.load_model()
    assert m is not None and r is not None
    assert recommend(m, 2, 5) == recommend(r, 2, 5)
