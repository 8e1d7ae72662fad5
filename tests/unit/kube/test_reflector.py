"""The one list-then-watch loop: versions, bookmarks, 410 Gone, ERROR events, outages, backoff."""

from __future__ import annotations

import itertools
import threading
from typing import TYPE_CHECKING, Any

import pytest

from dra_hami.kube.client import ApiError
from dra_hami.kube.reflector import Backoff, Callbacks, Reflector

PATH = "/apis/resource.k8s.io/v1/resourceslices"


def obj(name: str, version: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": str(version)}}


class Scripted:
    """Answers lists and watches from scripts; raises only ApiError, like RawKubeApi. Stops the loop when
    a script runs out."""

    def __init__(self, stop: threading.Event, lists: list, watches: list) -> None:
        self.stop, self.lists, self.watches = stop, lists, watches
        self.calls: list[tuple[str, str]] = []

    def list_objects(self, path: str, query=None, first_page_only: bool = False):
        self.calls.append(("list", (query or {}).get("limit", "")))
        if not self.lists:
            self.stop.set()
            return [], "999"
        answer = self.lists.pop(0)
        if isinstance(answer, ApiError):
            raise answer
        return answer

    def watch(self, path: str, resource_version: str, timeout_seconds: int, query=None):
        self.calls.append(("watch", resource_version))
        if not self.watches:
            self.stop.set()
            return iter(())
        answer = self.watches.pop(0)
        if isinstance(answer, ApiError):
            raise answer
        return iter(answer)


def run(lists: list, watches: list, **kwargs: Any) -> tuple[Scripted, list[tuple], Reflector]:
    stop = threading.Event()
    api = Scripted(stop, lists, watches)
    seen: list[tuple] = []
    ticks = itertools.count(0, 10)  # every stream looks long-lived unless a test says otherwise
    reflector = Reflector(
        api,
        PATH,
        Callbacks(
            lambda items, v: seen.append(("LIST", [i["metadata"]["name"] for i in items], v)),
            lambda t, o: seen.append((t, o["metadata"]["name"])),
        ),
        backoff=Backoff(initial=0.0, cap=0.0),
        clock=lambda: next(ticks),
        **kwargs,
    )
    reflector.run(stop)
    return api, seen, reflector


def test_lists_then_watches_from_the_listed_version_and_follows_bookmarks() -> None:
    api, seen, _ = run(
        lists=[([obj("a", 5)], "7")],
        watches=[
            [{"type": "ADDED", "object": obj("b", 8)}, {"type": "BOOKMARK", "object": obj("", 12)}],
            [{"type": "DELETED", "object": obj("a", 13)}],
        ],
    )
    # the server ended the first stream at timeoutSeconds: the next watch resumes at the bookmark, no relist
    assert api.calls[:3] == [("list", ""), ("watch", "7"), ("watch", "12")]
    assert api.calls[3] == ("watch", "13")
    assert seen == [("LIST", ["a"], "7"), ("ADDED", "b"), ("DELETED", "a")]


def test_410_gone_lists_again() -> None:
    api, seen, _ = run(
        lists=[([], "7"), ([obj("a", 20)], "21")],
        watches=[ApiError(410, "too old resource version: 7 (15)", "Expired")],
    )
    assert api.calls[:4] == [("list", ""), ("watch", "7"), ("list", ""), ("watch", "21")]
    assert seen == [("LIST", [], "7"), ("LIST", ["a"], "21")]


@pytest.mark.parametrize("code", [410, 500])
def test_an_error_event_lists_again(code: int) -> None:
    error = {"type": "ERROR", "object": {"kind": "Status", "code": code, "message": "boom"}}
    api, seen, _ = run(lists=[([], "7"), ([], "30")], watches=[[{"type": "ADDED", "object": obj("a", 8)}, error]])
    assert api.calls[:4] == [("list", ""), ("watch", "7"), ("list", ""), ("watch", "30")]
    assert seen == [("LIST", [], "7"), ("ADDED", "a"), ("LIST", [], "30")]


def test_an_unreachable_server_resumes_the_watch_from_the_last_version() -> None:
    down = ApiError(0, "MaxRetryError: connection refused", "Unreachable")
    api, _, _ = run(
        lists=[([], "7")],
        watches=[[{"type": "ADDED", "object": obj("a", 9)}], down, down, ApiError(410, "too old", "Expired")],
    )
    assert api.calls[:6] == [
        ("list", ""),
        ("watch", "7"),
        ("watch", "9"),
        ("watch", "9"),
        ("watch", "9"),  # answered 410: the version is gone, so list
        ("list", ""),
    ]


def test_list_failures_back_off_and_other_watch_failures_list_again() -> None:
    api, seen, _ = run(
        lists=[
            ApiError(0, "refused", "Unreachable"),
            ApiError(503, "etcd", "ServiceUnavailable"),
            ([], "3"),
            ([], "4"),
        ],
        watches=[ApiError(403, "forbidden", "Forbidden")],
    )
    assert api.calls[:5] == [("list", ""), ("list", ""), ("list", ""), ("watch", "3"), ("list", "")]
    assert seen[0] == ("LIST", [], "3")


def test_a_stream_that_closes_at_once_is_a_failure_not_a_spin() -> None:
    waits: list[float | None] = []

    class RecordingStop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:  # records the back-off, never sleeps
            waits.append(timeout)
            return super().wait(0)

    stop = RecordingStop()
    api = Scripted(stop, [([], "7"), ([], "8")], [[], []])
    reflector = Reflector(api, PATH, Callbacks(lambda *a: None, lambda *a: None), clock=lambda: 0.0,
                          backoff=Backoff(initial=0.5, cap=4.0, rand=lambda: 0.0))  # fmt: skip
    reflector.run(stop)
    assert api.calls[:4] == [("list", ""), ("watch", "7"), ("list", ""), ("watch", "8")]
    assert waits[:2] == [0.5, 1.0]  # backed off, growing


def test_items_false_lists_one_item_only_and_hands_over_none() -> None:
    api, seen, _ = run(lists=[([obj("a", 1)], "7")], watches=[], items=False)
    assert api.calls[0] == ("list", "1")
    assert seen[0] == ("LIST", [], "7")


def test_a_handler_bug_does_not_end_the_loop() -> None:
    stop = threading.Event()
    api = Scripted(stop, [([], "1"), ([], "2")], [])
    calls = []

    def broken(items, version):
        calls.append(version)
        if len(calls) == 1:
            raise KeyError("bug")

    Reflector(api, PATH, Callbacks(broken, lambda *a: None), backoff=Backoff(initial=0.0, cap=0.0)).run(stop)
    assert calls[:2] == ["1", "2"]


def test_a_list_without_a_version_is_not_watched_from_nothing() -> None:
    api, _, _ = run(lists=[([], ""), ([], "5")], watches=[])
    assert next(c for c in api.calls if c[0] == "watch") == ("watch", "5")


def test_backoff_grows_jitters_and_caps() -> None:
    rolls = iter([0.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.0])
    backoff = Backoff(initial=1.0, cap=8.0, jitter=0.5, rand=lambda: next(rolls))
    # worked numbers: steps 1, 2, 4, 8, 8 (capped); jitter takes up to half of a step off
    assert [backoff.next() for _ in range(6)] == [1.0, 2.0, 2.0, 8.0, 8.0, 6.0]
    backoff.reset()
    assert backoff.next() == 1.0


if TYPE_CHECKING:  # mypy (.ci/run) checks that each fake still has the shape of the Protocol it stands in for
    from dra_hami.kube.reflector import ListWatchApi

    _list_watch_api: type[ListWatchApi] = Scripted
