"""A step's Ray session: a local Ray starts when first needed, with the data decoded in a
thread meanwhile; a failed start is raised once that work has ended; only what the session
started is shut down. Ray's own start is replaced by stand-ins that record what happens, so
these run in milliseconds (the real start is exercised by every Ray search test)."""

import threading

import pytest

from scaling_search.settings import RaySettings
from scaling_search.train.runners import ray_tune
from scaling_search.train.runners.ray_tune import RaySession, ensure_ray, while_ray_starts


@pytest.fixture
def fake_ray(monkeypatch):
    """start_ray and check_cluster stand-ins; ``calls`` records (what, thread name)."""
    calls: list[tuple[str, str]] = []
    state = {"owns": True, "fail": None, "started": threading.Event(), "shutdowns": 0}

    def start_ray(settings):
        calls.append(("start", threading.current_thread().name))
        state["started"].set()
        if state["fail"]:
            raise state["fail"]
        return state["owns"]

    monkeypatch.setattr(ray_tune, "start_ray", start_ray)
    monkeypatch.setattr(ray_tune, "check_cluster", lambda settings: calls.append(("check", "")))
    import ray
    monkeypatch.setattr(ray, "shutdown", lambda: state.__setitem__("shutdowns", state["shutdowns"] + 1))
    return calls, state


def test_the_data_decodes_in_a_thread_while_a_local_ray_starts(fake_ray):
    calls, state = fake_ray

    def decode():
        # Returns only once Ray's start has begun on the main thread: run one after the other,
        # this would wait out its timeout and fail.
        assert state["started"].wait(timeout=10), "the work did not overlap Ray's start"
        return threading.current_thread().name

    with RaySession(RaySettings(num_cpus=2)) as session:
        assert calls == []  # nothing started on entering: a local Ray waits until first needed
        worker = while_ray_starts(decode)
        assert worker != threading.main_thread().name
        assert calls == [("start", threading.main_thread().name), ("check", "")]
        assert while_ray_starts(lambda: threading.current_thread().name) == threading.main_thread().name
        ensure_ray()
        assert [c for c, _ in calls].count("start") == 1  # started once
        assert session.owns
    assert state["shutdowns"] == 1


def test_a_failed_start_is_raised_after_the_work_ends(fake_ray):
    calls, state = fake_ray
    state["fail"] = ConnectionError("no Ray")
    ended = []

    def decode():
        state["started"].wait(timeout=10)
        ended.append(True)
        return "images"

    with pytest.raises(ConnectionError, match="no Ray"), RaySession(RaySettings(num_cpus=2)):
        while_ray_starts(decode)
    assert ended == [True]
    assert state["shutdowns"] == 0  # nothing started, nothing shut down


def test_a_cluster_is_joined_on_entering_and_a_joined_ray_is_not_shut_down(fake_ray):
    calls, state = fake_ray
    state["owns"] = False  # Ray was already up (joined): not this session's to shut down
    with RaySession(RaySettings(address="ray://head:10001")):
        assert [c for c, _ in calls] == ["start", "check"]
        assert while_ray_starts(lambda: threading.current_thread().name) == threading.main_thread().name
    assert state["shutdowns"] == 0
    assert RaySession.current is None


def test_a_cluster_too_small_is_refused_and_the_ray_started_is_shut_down(fake_ray, monkeypatch):
    calls, state = fake_ray

    def too_small(settings):
        raise ValueError("runner.cpus_per_trial=8 but the Ray cluster has 4 CPUs")

    monkeypatch.setattr(ray_tune, "check_cluster", too_small)
    with pytest.raises(ValueError, match="has 4 CPUs"), RaySession(RaySettings(address="10.0.0.1:6379")):
        pass
    assert state["shutdowns"] == 1
    assert RaySession.current is None


def test_outside_a_session_the_work_just_runs():
    assert RaySession.current is None
    assert while_ray_starts(lambda: threading.current_thread().name) == threading.main_thread().name
    ensure_ray()  # a no-op
