"""The watch-fed copy the loops read instead of listing (mover_k8s.k8s.cache): filled by one
list, kept current by the watch's events, written through by the loop's own writes, and asked
only what it can answer; everything else goes to the API as before."""

from __future__ import annotations

import socket
import threading

import pytest

from mover_k8s import api
from mover_k8s.k8s.cache import Cache, label_matcher
from mover_k8s.k8s.client import Kube, Obj
from mover_k8s.wakeup import Wakeup

from .conftest import Env, wait_until


def _cm(ns: str, name: str, **labels: str) -> Obj:
    return {"metadata": {"name": name, "namespace": ns, "labels": labels}, "data": {"k": "v"}}


def _names(objs: list[Obj] | None) -> list[str]:
    assert objs is not None
    return [o["metadata"]["name"] for o in objs]


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("a=1", {"a": "1"}, True),
        ("a=1", {"a": "2"}, False),
        ("a==1", {"a": "1"}, True),
        ("a!=1", {"a": "2"}, True),
        ("a!=1", {}, True),
        ("a!=1", {"a": "1"}, False),
        ("a", {"a": ""}, True),
        ("a", {"b": "1"}, False),
        ("!a", {"b": "1"}, True),
        ("!a", {"a": "1"}, False),
        ("a=1, b=2", {"a": "1", "b": "2"}, True),
        ("a=1,b=2", {"a": "1", "b": "3"}, False),
        ("", {"a": "1"}, True),
    ],
)
def test_equality_selectors_match_as_the_api_does(
    selector: str, labels: dict[str, str], expected: bool
) -> None:
    matches = label_matcher(selector)
    assert matches is not None
    assert matches(labels) is expected


@pytest.mark.parametrize("selector", ["env in (a,b)", "env notin (a)", "a=1,env in (x)"])
def test_set_based_selectors_are_left_to_the_api(selector: str) -> None:
    assert label_matcher(selector) is None


def test_the_watches_fill_the_copy_and_keep_it_current(env: Env) -> None:
    cluster = env.served.cluster
    env.kube.create(api.NAMESPACE, {"metadata": {"name": "w"}})
    env.kube.create(api.NAMESPACE, {"metadata": {"name": "other"}})
    env.kube.create(api.CONFIG_MAP, _cm("w", "first", app="x"))
    env.kube.create(api.CONFIG_MAP, _cm("w", "second"))
    env.kube.create(api.CONFIG_MAP, _cm("other", "elsewhere"))
    cache = Cache()
    cached = env.kube.cached(cache)
    wakeup = Wakeup(env.kube, (api.CONFIG_MAP,), "w", cache=cache)
    assert cached.cache is cache and env.kube.cache is None  # the original stays uncached
    stop = threading.Event()
    with wakeup.running(stop):
        wait_until(lambda: cache.list(api.CONFIG_MAP, "w", None) is not None, what="the fill")
        assert _names(cached.list(api.CONFIG_MAP, "w")) == ["first", "second"]
        lists = cluster.served["LIST"]
        # Changes by another client arrive through the watch.
        env.kube.create(api.CONFIG_MAP, _cm("w", "third", app="x"))
        env.kube.patch(api.CONFIG_MAP, "w", "first", {"data": {"k": "changed"}})
        env.kube.delete(api.CONFIG_MAP, "w", "second")
        wait_until(
            lambda: _names(cached.list(api.CONFIG_MAP, "w")) == ["first", "third"],
            what="the events",
        )
        first = cached.list(api.CONFIG_MAP, "w")[0]  # type: ignore[index]
        assert first["data"] == {"k": "changed"}
        assert first["apiVersion"] == "v1" and first["kind"] == "ConfigMap"
        assert _names(cached.list(api.CONFIG_MAP, "w", label_selector="app=x")) == [
            "first",
            "third",
        ]
        # Callers own what they get: changing it changes nothing in the copy.
        first["data"]["k"] = "scribbled"
        assert cached.list(api.CONFIG_MAP, "w")[0]["data"] == {"k": "changed"}
        assert cluster.served["LIST"] == lists  # all of it from memory
        # What the copy does not hold goes to the API.
        assert _names(cached.list(api.CONFIG_MAP, "other")) == ["elsewhere"]
        assert _names(cached.list(api.CONFIG_MAP, "w", label_selector="app in (x)")) == [
            "first",
            "third",
        ]
        assert cluster.served["LIST"] == lists + 2
    assert cache.list(api.NAMESPACE, None, None) is None  # never held


def test_after_a_410_the_copy_is_listed_again_and_matches_the_api(env: Env) -> None:
    cluster = env.served.cluster
    cluster.history, cluster.bookmarks = 5, False
    env.kube.create(api.NAMESPACE, {"metadata": {"name": "w"}})
    env.kube.create(api.NAMESPACE, {"metadata": {"name": "busy"}})
    env.kube.create(api.CONFIG_MAP, _cm("w", "doomed"))
    cache = Cache()
    wakeup = Wakeup(env.kube, (api.CONFIG_MAP,), "w", cache=cache)
    wakeup.watch_seconds = 1
    stop = threading.Event()
    with wakeup.running(stop):
        wait_until(lambda: cache.list(api.CONFIG_MAP, "w", None) is not None, what="the fill")
        lists = cluster.served["LIST"]
        # The watch ends after a second; meanwhile more changes than the server keeps, so the
        # next watch gets 410 and the copy is listed again.
        env.kube.delete(api.CONFIG_MAP, "w", "doomed")
        env.kube.create(api.CONFIG_MAP, _cm("w", "born"))
        for i in range(20):
            env.kube.create(api.CONFIG_MAP, _cm("busy", f"cm-{i}"))
        wait_until(lambda: cluster.served["LIST"] > lists, what="a list after 410")
        wait_until(
            lambda: _names(cache.list(api.CONFIG_MAP, "w", None)) == ["born"],
            what="the copy as the API has it",
        )


def test_the_loops_own_writes_are_in_the_copy_at_once(env: Env) -> None:
    """No watch runs here: what the list returns after each write comes from the write."""
    env.kube.create(api.NAMESPACE, {"metadata": {"name": "w"}})
    cache = Cache()
    cache.hold(api.CONFIG_MAP, "w", None)
    cache.fill(api.CONFIG_MAP, [])
    cached = env.kube.cached(cache)
    created = cached.create(api.CONFIG_MAP, _cm("w", "mine"))
    assert _names(cached.list(api.CONFIG_MAP, "w")) == ["mine"]
    cached.patch(api.CONFIG_MAP, "w", "mine", {"data": {"k": "patched"}})
    assert cached.list(api.CONFIG_MAP, "w")[0]["data"] == {"k": "patched"}
    # The watch's event for the create arrives after the patch: it is older, and not applied.
    cache.apply(api.CONFIG_MAP, {"type": "ADDED", "object": created})
    assert cached.list(api.CONFIG_MAP, "w")[0]["data"] == {"k": "patched"}
    assert cached.delete(api.CONFIG_MAP, "w", "mine")
    assert cached.list(api.CONFIG_MAP, "w") == []
    assert env.kube.list(api.CONFIG_MAP, "w") == []  # and the API agrees


def test_a_narrower_copy_answers_only_its_own_question(env: Env) -> None:
    env.kube.create(api.NAMESPACE, {"metadata": {"name": "w"}})
    env.kube.create(api.CONFIG_MAP, _cm("w", "mine", node="a"))
    env.kube.create(api.CONFIG_MAP, _cm("w", "theirs", node="b"))
    cache = Cache()
    cache.hold(api.CONFIG_MAP, "w", "node=a")
    cache.fill(api.CONFIG_MAP, env.kube.list(api.CONFIG_MAP, "w", "node=a"))
    assert _names(cache.list(api.CONFIG_MAP, "w", "node=a")) == ["mine"]
    assert cache.list(api.CONFIG_MAP, "w", None) is None  # wider: the API's to answer
    assert cache.list(api.CONFIG_MAP, None, "node=a") is None  # every namespace: too
    assert cache.list(api.CONFIG_MAP, "w", "node=a", "metadata.name=mine") is None
    # An object relabelled away from the copy's selector leaves it.
    moved = env.kube.patch(api.CONFIG_MAP, "w", "mine", {"metadata": {"labels": {"node": "b"}}})
    cache.apply(api.CONFIG_MAP, {"type": "MODIFIED", "object": moved})
    assert cache.list(api.CONFIG_MAP, "w", "node=a") == []


def test_while_a_watch_fails_its_kind_is_read_from_the_api(env: Env) -> None:
    """A copy that may miss changes is not served: during an outage of the watch the loop's
    lists go to the API (and fail or not with it); when the watch works again, a new list fills
    the copy with what changed meanwhile."""
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    env.kube.create(api.NAMESPACE, {"metadata": {"name": "w"}})
    env.kube.create(api.CONFIG_MAP, _cm("w", "before"))
    kube = Kube.at(env.served.url)
    cache = Cache()
    wakeup = Wakeup(kube, (api.CONFIG_MAP,), "w", cache=cache)
    stop = threading.Event()
    try:
        with wakeup.running(stop):
            wait_until(lambda: cache.list(api.CONFIG_MAP, "w", None) is not None, what="fill")
            kube._api.configuration.host = dead  # the API goes away...

            def cut() -> bool:
                # ...and takes the open watch with it: also one that was being opened at the
                # address of before (the thread may be between fill and watch right now).
                with wakeup._lock:
                    for watch in wakeup._open:
                        watch.close()
                return cache.list(api.CONFIG_MAP, "w", None) is None

            wait_until(cut, what="stale")
            env.kube.create(api.CONFIG_MAP, _cm("w", "meanwhile"))
            kube._api.configuration.host = env.served.url  # back
            wait_until(
                lambda: (
                    _names(cache.list(api.CONFIG_MAP, "w", None) or []) == ["before", "meanwhile"]
                ),
                what="a new fill",
                timeout=60,
            )
    finally:
        kube.close()
