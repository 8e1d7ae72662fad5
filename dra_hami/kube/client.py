"""Thin JSON adapter over the official ``kubernetes`` client.

DRA objects travel as plain dicts (the API server's JSON), never as the client's typed models: the 37.x
models drop fields they do not know on read, and writing such an object back would erase what a newer API
server added. The client still does configuration, authentication, TLS and connection pooling.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from urllib3 import Timeout
from urllib3.exceptions import HTTPError, ReadTimeoutError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from dra_hami.kube import objects as k8s

RESOURCE_API = "/apis/resource.k8s.io/v1"
CONNECTION_POOL_SIZE = 32
TOKEN_REFRESH_SECONDS = 5.0


def throttled_refresh(hook: Callable[[Any], None], period: float, clock: Callable[[], float] = time.monotonic):
    """The client's token-refresh hook, run at most once per ``period`` seconds.

    The kubernetes client runs the hook before every request, and the config loaders' hooks re-apply the whole
    configuration each time: its host setter scans the process environment for proxy variables (tens of
    microseconds, hundreds in a pod with many service variables) on every claim read and every controller
    write. The loaders only re-read a token once it expires (in-cluster: a minute after the last read), so a
    refresh at most every few seconds changes nothing but the cost."""
    last = [float("-inf")]
    lock = threading.Lock()

    def refresh(configuration: Any) -> None:
        now = clock()
        with lock:
            if now - last[0] < period:
                return
            last[0] = now
        hook(configuration)

    return refresh


class KubeConfigError(ValueError):
    """No usable Kubernetes client configuration; the message says what to pass."""


class ApiError(Exception):
    """An API call that failed; ``status`` is the HTTP code (0 when the server was not reached)."""

    def __init__(self, status: int, message: str, reason: str = ""):
        super().__init__(f"{status} {reason}: {message}" if reason else f"{status}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def unreachable(self) -> bool:
        """The server was not reached or did not answer (refused, reset, timed out, TLS): retry later."""
        return self.status == 0

    @property
    def gone(self) -> bool:
        """410 Gone: a watch's resourceVersion is too old; list again."""
        return self.status == 410


# What the client stack raises when the API server cannot be talked to: urllib3's own types (MaxRetryError,
# ProtocolError, ReadTimeoutError, SSLError ...), the socket's OSError family (ssl.SSLError included) and
# http.client's (IncompleteRead, BadStatusLine). Every call of RawKubeApi turns them into ApiError status 0.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (HTTPError, OSError, http.client.HTTPException)


def transport_error(err: BaseException) -> ApiError:
    """ApiError status 0 for a transport failure, saying what happened in words an operator can act on."""
    reason = "Timeout" if isinstance(err, ReadTimeoutError | Urllib3Timeout | TimeoutError) else "Unreachable"
    cause = getattr(err, "reason", None)  # MaxRetryError wraps the real cause
    detail = f"{type(err).__name__}: {err}"
    if isinstance(cause, BaseException) and cause is not err:
        detail = f"{type(cause).__name__}: {cause}"
        if isinstance(cause, ReadTimeoutError | Urllib3Timeout | TimeoutError):
            reason = "Timeout"
    return ApiError(0, detail, reason)


class ListWatchApi(Protocol):
    """The two calls a reflector makes (RawKubeApi has them; tests pass in-memory fakes raising ApiError only)."""

    def list_objects(
        self, path: str, query: dict[str, str] | None = None, first_page_only: bool = False
    ) -> tuple[list[dict[str, Any]], str]: ...

    def watch(
        self, path: str, resource_version: str, timeout_seconds: int, query: dict[str, str] | None = None
    ) -> Iterator[dict[str, Any]]: ...


class KubeApi(ListWatchApi, Protocol):
    """The calls the node side makes; implemented by RawKubeApi and by in-memory fakes in tests."""

    def get_resource_claim(self, namespace: str, name: str) -> dict[str, Any]: ...

    def get_node(self, name: str) -> dict[str, Any]: ...

    def list_resource_slices(self, field_selector: str = "") -> list[dict[str, Any]]: ...

    def create_resource_slice(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def update_resource_slice(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def delete_resource_slice(self, name: str) -> None: ...


@dataclass
class RawKubeApi:
    """KubeApi over a ``kubernetes.client.ApiClient`` (from a kubeconfig or the in-cluster config)."""

    api_client: Any
    timeout: float = 10.0

    @classmethod
    def from_config(cls, kubeconfig: str | None = None, qps_timeout: float = 10.0) -> RawKubeApi:
        """Raises KubeConfigError (one line saying what to pass) when no configuration can be loaded."""
        from kubernetes import client, config

        configuration = client.Configuration()
        if kubeconfig:
            try:
                config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
            except (config.ConfigException, OSError, ValueError) as err:
                raise KubeConfigError(f"--kubeconfig {kubeconfig}: cannot be loaded: {err}") from None
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException:
                configuration = client.Configuration()
                try:
                    config.load_kube_config(client_configuration=configuration)
                except (config.ConfigException, OSError, ValueError) as err:
                    raise KubeConfigError(
                        "no Kubernetes configuration: not running in a pod with a service account, and no "
                        f"kubeconfig ({err}); pass --kubeconfig FILE (or set KUBECONFIG)"
                    ) from None
        # The client's default pool is 5 connections per CPU: on a 2-core node the plugin's 16 claim-read
        # threads (plus watches) would open and drop a new TLS connection per burst instead of reusing one.
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize, CONNECTION_POOL_SIZE)
        hook = configuration.refresh_api_key_hook
        if hook is not None:
            configuration.refresh_api_key_hook = throttled_refresh(hook, TOKEN_REFRESH_SECONDS)
        return cls(client.ApiClient(configuration), qps_timeout)

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | list[Any] | None = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> dict[str, Any]:
        # Straight to the client's urllib3 pool (its TLS, certificates and proxy settings): the generated
        # client's param_serialize / call_api / RESTResponse layers cost about as much CPU as the HTTP
        # exchange itself, on every claim read of a prepare and every controller write.
        configuration = self.api_client.configuration
        url = configuration.host + path
        if query:
            url += "?" + urllib.parse.urlencode(list(query.items()))
        headers = {**self.api_client.default_headers, "Accept": "application/json"}
        token = configuration.auth_settings().get("BearerToken")  # runs the (throttled) refresh hook
        if token and token.get("value"):
            headers[token["key"]] = token["value"]
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        try:
            response = self.api_client.rest_client.pool_manager.request(
                method, url, body=data, headers=headers, timeout=Timeout(total=timeout or self.timeout)
            )
        except TRANSPORT_ERRORS as err:  # refused, reset, timed out, DNS, TLS
            raise transport_error(err) from err
        if response.status >= 400:
            raise _api_error(response.status, response.reason or "", response.data)
        return _json(response.data, path)

    def get_resource_claim(self, namespace: str, name: str) -> dict[str, Any]:
        return self.request("GET", f"{RESOURCE_API}/namespaces/{namespace}/resourceclaims/{name}")

    def get_node(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v1/nodes/{name}")

    def list_resource_slices(self, field_selector: str = "") -> list[dict[str, Any]]:
        query = {"fieldSelector": field_selector} if field_selector else None
        return self.request("GET", f"{RESOURCE_API}/resourceslices", query=query).get("items") or []

    def create_resource_slice(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", f"{RESOURCE_API}/resourceslices", body=body)

    def update_resource_slice(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("PUT", f"{RESOURCE_API}/resourceslices/{body['metadata']['name']}", body=body)

    def delete_resource_slice(self, name: str) -> None:
        try:
            self.request("DELETE", f"{RESOURCE_API}/resourceslices/{name}")
        except ApiError as err:
            if not err.not_found:
                raise

    def _stream(self, path: str, query: list[tuple[str, str]], timeout_seconds: int) -> Iterator[dict[str, Any]]:
        """The JSON lines of a watch response, one event each, until the server closes the stream."""
        method, url, headers, _, _ = self.api_client.param_serialize(
            method="GET",
            resource_path=path,
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api_client.rest_client.pool_manager.request(
                method, url, headers=headers, preload_content=False, timeout=timeout_seconds + 5
            )
        except TRANSPORT_ERRORS as err:
            raise transport_error(err) from err
        try:
            if response.status >= 400:
                raise _api_error(response.status, response.reason or "", response.data)
            buffer = b""
            for chunk in response.stream(65536):
                buffer += chunk
                if b"\n" not in chunk:
                    continue
                # One split per chunk: splitting one line off at a time copied the rest of the chunk per event.
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield _json(line, path)
        except TRANSPORT_ERRORS as err:  # reset or timed out mid-stream
            raise transport_error(err) from err
        finally:
            response.release_conn()

    # ------------------------------------------------------------ generic calls (the allocation controller)

    def list_objects(
        self, path: str, query: dict[str, str] | None = None, first_page_only: bool = False
    ) -> tuple[list[dict[str, Any]], str]:
        """All items of a collection, following ``continue`` tokens; returns (items, the list's resourceVersion).

        ``first_page_only``: just the first page (with ``limit`` 1, a cheap way to learn where a watch starts)."""
        items: list[dict[str, Any]] = []
        params = dict(query or {})
        params.setdefault("limit", "500")
        while True:
            page = self.request("GET", path, query=params, timeout=max(self.timeout, 60.0))
            items.extend(page.get("items") or [])
            meta = k8s.list_meta(page)
            if first_page_only or not meta.get("continue"):
                return items, meta.get("resourceVersion", "")
            params["continue"] = meta["continue"]

    def watch(
        self, path: str, resource_version: str, timeout_seconds: int, query: dict[str, str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Watch events of a collection from ``resource_version`` (bookmarks on); ERROR events are yielded too."""
        params = [
            ("watch", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
            ("allowWatchBookmarks", "true"),
            *sorted((query or {}).items()),
        ]
        if resource_version:
            params.append(("resourceVersion", resource_version))
        return self._stream(path, params, timeout_seconds)

    # ``timeout`` (seconds) overrides the adapter's for one call: the controller bounds its writes by the
    # time its lease still covers.

    def get_object(self, path: str, timeout: float | None = None) -> dict[str, Any]:
        return self.request("GET", path, timeout=timeout)

    def create_object(self, path: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        return self.request("POST", path, body=body, timeout=timeout)

    def replace_object(self, path: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        return self.request("PUT", path, body=body, timeout=timeout)

    def patch_object(
        self, path: str, patch: dict[str, Any] | list[Any], kind: str = "merge", timeout: float | None = None
    ) -> dict[str, Any]:
        """PATCH with ``kind`` merge, json or strategic."""
        types = {
            "merge": "application/merge-patch+json",
            "json": "application/json-patch+json",
            "strategic": "application/strategic-merge-patch+json",
        }
        return self.request("PATCH", path, body=patch, content_type=types[kind], timeout=timeout)


def _json(data: bytes | str, path: str) -> dict[str, Any]:
    """A JSON answer; anything else (a proxy's HTML page, a cut-off line) is an ApiError, not a ValueError."""
    if not data:
        return {}
    try:
        value = json.loads(data)
    except ValueError as err:
        raise ApiError(0, f"{path}: the answer is not JSON ({err})", "BadResponse") from err
    if not isinstance(value, dict):
        raise ApiError(0, f"{path}: the answer is not a JSON object", "BadResponse")
    return value


def _api_error(status: int, reason: str, raw: Any) -> ApiError:
    message = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw or "")
    try:
        status_obj = json.loads(message)
        message = status_obj.get("message", message)
        reason = status_obj.get("reason", reason)
    except (ValueError, AttributeError):
        pass
    return ApiError(status, message, reason)
