"""A tiny in-memory stand-in for the resource.k8s.io/v1 part of kube-apiserver, on 127.0.0.1.

It lets `dra-hami demo` (and the gRPC tests) run the real kubelet plugin process, with the real
Kubernetes client, against objects the demo made up, with no cluster: GET/LIST/WATCH/POST/PUT/DELETE with
resourceVersion conflicts and field selectors, the subset the node side uses.
"""

from __future__ import annotations

import contextlib
import copy
import json
import queue
import re
import socket
import sys
import threading
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

from dra_hami.kube import objects as k8s

_PATH = re.compile(r"^/apis/resource\.k8s\.io/v1(?:/namespaces/(?P<ns>[^/]+))?/(?P<res>[a-z]+)(?:/(?P<name>[^/]+))?$")
_KINDS = {
    "resourceclaims": "ResourceClaim",
    "resourceslices": "ResourceSlice",
    "deviceclasses": "DeviceClass",
}


class FakeApiServer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._version = 0
        self._watchers: list[tuple[str, queue.Queue]] = []
        self.requests: list[tuple[str, str]] = []  # (method, path), for tests that count API calls
        self._connections: set[socket.socket] = set()
        self._port = 0
        self._bind()

    def _bind(self) -> None:
        handler = type("Handler", (_Handler,), {"store": self})
        self._http = _QuietServer(("127.0.0.1", self._port), handler)
        self._http.daemon_threads = True
        self._port = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self.running = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"  # where _bind listens

    def start(self) -> FakeApiServer:
        """Serve (again, on the same port, with the same objects, after ``stop``: an API server restart)."""
        if self._thread.ident is not None:
            self._bind()
        self._thread.start()
        self.running = True
        return self

    def stop(self) -> None:
        """Go away like a crashed API server: the port refuses, open connections and watches are cut."""
        if not self.running:
            return
        self.running = False
        self._http.shutdown()
        self._http.server_close()
        with self._lock:
            connections, self._connections = list(self._connections), set()
            for _, sink in self._watchers:
                sink.put(None)  # ends the stream
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)

    def write_kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "demo", "cluster": {"server": self.url}}],
            "users": [{"name": "demo", "user": {"token": "demo"}}],
            "contexts": [{"name": "demo", "context": {"cluster": "demo", "user": "demo"}}],
            "current-context": "demo",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # -- object store ---------------------------------------------------------------------------------

    def put(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or overwrite an object directly (no conflict check); fills uid and resourceVersion."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        with self._lock:
            key = (resource, meta.get("namespace", ""), meta["name"])
            event = "MODIFIED" if key in self._objects else "ADDED"
            self._store(key, obj, event)
        return copy.deepcopy(obj)

    def get(self, resource: str, name: str, namespace: str = "") -> dict[str, Any] | None:
        with self._lock:
            obj = self._objects.get((resource, namespace, name))
            return copy.deepcopy(obj) if obj else None

    def list(self, resource: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(o) for (r, _, _), o in sorted(self._objects.items()) if r == resource]

    def delete(self, resource: str, name: str, namespace: str = "") -> bool:
        with self._lock:
            obj = self._objects.pop((resource, namespace, name), None)
            if obj is not None:
                self._notify(resource, "DELETED", obj)
            return obj is not None

    def _store(self, key: tuple[str, str, str], obj: dict[str, Any], event: str) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        obj.setdefault("apiVersion", "v1" if key[0] == "nodes" else "resource.k8s.io/v1")
        obj.setdefault("kind", _KINDS[key[0]])
        self._objects[key] = obj
        self._notify(key[0], event, obj)

    def _notify(self, resource: str, event: str, obj: dict[str, Any]) -> None:
        for watched, sink in self._watchers:
            if watched == resource:
                sink.put({"type": event, "object": copy.deepcopy(obj)})

    # -- HTTP verbs -----------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        self.requests.append((method, path))
        match = _PATH.match(path)
        if not match or match["res"] not in _KINDS:
            return _status(HTTPStatus.NOT_FOUND, f"the server could not find the requested resource ({path})")
        resource, namespace, name = match["res"], match["ns"] or "", match["name"]
        with self._lock:
            if method == "GET" and name:
                obj = self._objects.get((resource, namespace, name))
                if obj is None:
                    return _not_found(resource, name)
                return HTTPStatus.OK, obj
            if method == "GET":
                items = [
                    o
                    for (r, ns, _), o in sorted(self._objects.items())
                    if r == resource and (not namespace or ns == namespace) and _selected(o, query)
                ]
                kind = _KINDS[resource] + "List"
                return HTTPStatus.OK, {
                    "kind": kind,
                    "metadata": {"resourceVersion": str(self._version)},
                    "items": items,
                }
            if method == "POST":
                meta = body.setdefault("metadata", {})
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                key = (resource, namespace, meta.get("name", ""))
                if key in self._objects:
                    return _status(HTTPStatus.CONFLICT, f'{resource} "{key[2]}" already exists', "AlreadyExists")
                meta["uid"] = str(uuid.uuid4())
                self._store(key, body, "ADDED")
                return HTTPStatus.CREATED, body
            key = (resource, namespace, name or "")
            current = self._objects.get(key)
            if current is None:
                return _not_found(resource, name or "")
            if method == "PUT":
                sent = k8s.meta(body).get("resourceVersion")
                if sent and sent != current["metadata"]["resourceVersion"]:
                    return _status(
                        HTTPStatus.CONFLICT,
                        f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified',
                        "Conflict",
                    )
                body["metadata"]["uid"] = current["metadata"]["uid"]
                self._store(key, body, "MODIFIED")
                return HTTPStatus.OK, body
            if method == "DELETE":
                del self._objects[key]
                self._notify(resource, "DELETED", current)
                return HTTPStatus.OK, current
        return _status(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not supported here")

    def watch(self, resource: str, query: dict[str, str]) -> queue.Queue:
        sink: queue.Queue = queue.Queue()
        with self._lock:
            self._watchers.append((resource, sink))
        return sink

    def unwatch(self, sink: queue.Queue) -> None:
        with self._lock:
            self._watchers = [(r, s) for r, s in self._watchers if s is not sink]


def _selected(obj: dict[str, Any], query: dict[str, str]) -> bool:
    for term in filter(None, query.get("fieldSelector", "").split(",")):
        field, _, want = term.partition("=")
        value: Any = obj
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if str(value) != want:
            return False
    return True


def _status(code: HTTPStatus, message: str, reason: str = "") -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message}
    body.update({"reason": reason or code.phrase.replace(" ", ""), "code": int(code)})
    return code, body


def _not_found(resource: str, name: str) -> tuple[int, dict[str, Any]]:
    return _status(HTTPStatus.NOT_FOUND, f'{resource}.resource.k8s.io "{name}" not found', "NotFound")


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a watch being closed, a process exiting) is normal here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    store: FakeApiServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the demo prints its own story
        pass

    def setup(self) -> None:
        super().setup()
        with self.store._lock:
            self.store._connections.add(self.connection)

    def finish(self) -> None:
        with self.store._lock:
            self.store._connections.discard(self.connection)
        super().finish()

    def _dispatch(self) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        if self.command == "GET" and query.get("watch") in ("true", "1"):
            self._stream_watch(url.path, query)
            return
        code, payload = self.store.handle(self.command, url.path, query, body)
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream_watch(self, path: str, query: dict[str, str]) -> None:
        match = _PATH.match(path)
        resource = match["res"] if match else ""
        sink = self.store.watch(resource, query)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = float(query.get("timeoutSeconds", "30"))
        try:
            while True:
                try:
                    event = sink.get(timeout=deadline)
                except queue.Empty:
                    break
                if event is None:  # the server is stopping: cut the stream, no clean end
                    return
                if not _selected(event["object"], query):
                    continue
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self.store.unwatch(sink)

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch
