"""The real adapter (RawKubeApi over the kubernetes client and urllib3) against servers that fail the way
networks do: every failure comes out as ApiError status 0, never as a urllib3, ssl or socket type."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from kubernetes import client

from dra_hami.kube.client import ApiError, RawKubeApi

PATH = "/apis/resource.k8s.io/v1/resourceslices"


def adapter(port: int, timeout: float = 2.0) -> RawKubeApi:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    return RawKubeApi(client.ApiClient(configuration), timeout)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reset(conn: socket.socket) -> None:
    """Close with an RST instead of a FIN (SO_LINGER 0), as a crashing proxy or API server does."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


@contextmanager
def tcp_server(serve: Callable[[socket.socket], None]) -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    done = threading.Event()

    def loop() -> None:
        listener.settimeout(0.1)
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join(2)
        listener.close()


def read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk


def resetting(conn: socket.socket) -> None:
    read_request(conn)
    reset(conn)


def calls(api: RawKubeApi) -> dict[str, Callable[[], object]]:
    return {
        "get": lambda: api.get_object(PATH + "/x"),
        "list": lambda: api.list_objects(PATH),
        "create": lambda: api.create_object(PATH, {"metadata": {"name": "x"}}),
        "watch": lambda: list(api.watch(PATH, "7", 5)),
        "claim": lambda: api.get_resource_claim("ns", "c"),
    }


@pytest.mark.parametrize("call", ["get", "list", "create", "watch", "claim"])
def test_a_closed_port_is_an_unreachable_api_error(call: str) -> None:
    with pytest.raises(ApiError) as caught:
        calls(adapter(closed_port()))[call]()
    assert caught.value.status == 0 and caught.value.unreachable
    assert "refused" in caught.value.message.lower(), caught.value.message


@pytest.mark.parametrize("call", ["get", "list", "create", "watch"])
def test_a_server_that_resets_connections_is_an_unreachable_api_error(call: str) -> None:
    with tcp_server(resetting) as port, pytest.raises(ApiError) as caught:
        calls(adapter(port))[call]()
    assert caught.value.status == 0, caught.value


def test_a_watch_reset_mid_stream_yields_what_came_then_an_api_error() -> None:
    def one_event_then_reset(conn: socket.socket) -> None:
        read_request(conn)
        line = b'{"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"8"}}}\n'
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            + f"{len(line):x}\r\n".encode()
            + line
            + b"\r\n"
        )
        reset(conn)

    seen = []
    with tcp_server(one_event_then_reset) as port, pytest.raises(ApiError) as caught:
        for event in adapter(port).watch(PATH, "7", 5):
            seen.append(event["object"]["metadata"]["name"])
    assert seen == ["a"]
    assert caught.value.status == 0


def test_a_server_that_never_answers_is_a_timeout_api_error() -> None:
    hold: list[socket.socket] = []

    def silent(conn: socket.socket) -> None:
        read_request(conn)
        hold.append(conn)  # keep it open, say nothing

    with tcp_server(silent) as port, pytest.raises(ApiError) as caught:
        adapter(port, timeout=0.3).get_object(PATH + "/x")
    assert (caught.value.status, caught.value.reason) == (0, "Timeout"), caught.value
    for conn in hold:
        conn.close()


def test_an_answer_that_is_not_json_is_an_api_error() -> None:
    def html(conn: socket.socket) -> None:
        read_request(conn)
        body = b"<html>proxy says hi</html>"
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        conn.close()

    with tcp_server(html) as port, pytest.raises(ApiError) as caught:
        adapter(port).get_object(PATH + "/x")
    assert caught.value.reason == "BadResponse"


def test_watch_events_split_across_chunks_and_several_per_chunk_arrive_whole_and_in_order() -> None:
    events = [
        b'{"type":"ADDED","object":{"metadata":{"name":"%d","resourceVersion":"%d"}}}' % (i, 8 + i) for i in range(5)
    ]
    stream = b"\n".join(events) + b"\n"
    pieces = [stream[:30], stream[30:150], stream[150:151], stream[151:]]  # cut inside events and at a newline

    def chunked(conn: socket.socket) -> None:
        read_request(conn)
        body = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        conn.close()

    with tcp_server(chunked) as port:
        seen = [e["object"]["metadata"]["name"] for e in adapter(port).watch(PATH, "7", 5)]
    assert seen == ["0", "1", "2", "3", "4"]
