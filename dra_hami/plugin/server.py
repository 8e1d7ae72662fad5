"""The kubelet-facing gRPC endpoints: plugin registration, the DRA v1 / v1beta1 services and, when device
health is on, v1alpha1.DRAResourceHealth."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from dra_hami.kubeletapi import (
    dra_health_v1alpha1_pb2_grpc,
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
    pluginregistration_pb2,
    pluginregistration_pb2_grpc,
)
from dra_hami.plugin.state import ClaimRef, PluginState, PrepareResult

log = logging.getLogger(__name__)

# v1 first: a 1.35+ kubelet takes the first entry it knows (docs/design/kubelet.md#registration).
SUPPORTED_VERSIONS = ("v1.DRAPlugin", "v1beta1.DRAPlugin")
HEALTH_VERSION = "v1alpha1.DRAResourceHealth"


@dataclass
class RegistrationStatus:
    registered: bool = False
    error: str = ""
    changed: threading.Event = field(default_factory=threading.Event)


class Registration(pluginregistration_pb2_grpc.RegistrationServicer):
    def __init__(
        self,
        driver_name: str,
        endpoint: Path,
        status: RegistrationStatus,
        supported_versions: tuple[str, ...] = SUPPORTED_VERSIONS,
    ):
        self._info = pluginregistration_pb2.PluginInfo(
            type="DRAPlugin", name=driver_name, endpoint=str(endpoint), supported_versions=supported_versions
        )
        self._status = status

    def GetInfo(self, request, context):
        return self._info

    def NotifyRegistrationStatus(self, request, context):
        self._status.registered = request.plugin_registered
        self._status.error = request.error
        self._status.changed.set()
        if request.plugin_registered:
            log.info("registered with the kubelet")
        else:
            log.error("the kubelet refused the registration: %s", request.error)
        return pluginregistration_pb2.RegistrationStatusResponse()


class _DraService:
    """Shared body of the v1 and v1beta1 services; ``pb2`` picks the message module."""

    def __init__(self, state: PluginState, pb2, with_share_id: bool):
        self._state = state
        self._pb2 = pb2
        self._with_share_id = with_share_id

    def NodePrepareResources(self, request, context):
        started = time.perf_counter()
        refs = [ClaimRef(c.namespace, c.name, c.uid) for c in request.claims]
        try:
            results = self._state.prepare(refs)
        except Exception as err:  # a bug must fail these claims, not the kubelet's whole batch
            log.exception("prepare failed unexpectedly")
            results = {ref.uid: PrepareResult(error=f"internal error in dra-hami: {err!r}") for ref in refs}
        response = self._pb2.NodePrepareResourcesResponse()
        for ref in refs:
            result = results[ref.uid]
            entry = response.claims[ref.uid]
            if result.error:
                entry.error = result.error
                log.warning("prepare %s/%s (%s) failed: %s", ref.namespace, ref.name, ref.uid, result.error)
                continue
            for device in result.devices:
                out = entry.devices.add(
                    request_names=device.request_names,
                    pool_name=device.pool_name,
                    device_name=device.device_name,
                    cdi_device_ids=device.cdi_device_ids,
                )
                if self._with_share_id and device.share_id:
                    out.share_id = device.share_id
        # Debug: a log line per call was a tenth of a prepare's Python time; failures are logged above as warnings.
        log.debug("prepared %d claim(s) in %.1f ms", len(refs), (time.perf_counter() - started) * 1000)
        return response

    def NodeUnprepareResources(self, request, context):
        started = time.perf_counter()
        refs = [ClaimRef(c.namespace, c.name, c.uid) for c in request.claims]
        try:
            errors = self._state.unprepare(refs)
        except Exception as err:
            log.exception("unprepare failed unexpectedly")
            errors = {ref.uid: f"internal error in dra-hami: {err!r}" for ref in refs}
        response = self._pb2.NodeUnprepareResourcesResponse()
        for ref in refs:
            response.claims[ref.uid].error = errors[ref.uid]
            if errors[ref.uid]:
                log.warning("unprepare %s/%s (%s) failed: %s", ref.namespace, ref.name, ref.uid, errors[ref.uid])
        log.debug("unprepared %d claim(s) in %.1f ms", len(refs), (time.perf_counter() - started) * 1000)
        return response


class DraV1(_DraService, dra_v1_pb2_grpc.DRAPluginServicer):
    def __init__(self, state: PluginState):
        super().__init__(state, dra_v1_pb2, with_share_id=True)


class DraV1beta1(_DraService, dra_v1beta1_pb2_grpc.DRAPluginServicer):
    def __init__(self, state: PluginState):
        super().__init__(state, dra_v1beta1_pb2, with_share_id=False)


class PluginServer:
    """One gRPC server listening on the DRA socket and on the registration socket."""

    def __init__(
        self,
        state: PluginState,
        driver_name: str,
        dra_socket: Path,
        registration_socket: Path,
        health: dra_health_v1alpha1_pb2_grpc.DRAResourceHealthServicer | None = None,
    ):
        self.status = RegistrationStatus()
        self._dra_socket = dra_socket
        self._registration_socket = registration_socket
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="grpc"))
        dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(DraV1(state), self._server)
        dra_v1beta1_pb2_grpc.add_DRAPluginServicer_to_server(DraV1beta1(state), self._server)
        versions: tuple[str, ...] = SUPPORTED_VERSIONS
        if health is not None:
            # Without it the kubelet's health stream gets UNIMPLEMENTED (and logs it every 5 s).
            dra_health_v1alpha1_pb2_grpc.add_DRAResourceHealthServicer_to_server(health, self._server)
            versions = (*SUPPORTED_VERSIONS, HEALTH_VERSION)
        pluginregistration_pb2_grpc.add_RegistrationServicer_to_server(
            Registration(driver_name, dra_socket, self.status, versions), self._server
        )

    def start(self) -> None:
        # The DRA socket must answer before the kubelet sees the registration socket.
        for path in (self._dra_socket, self._registration_socket):
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a stale socket of a previous run
            if self._server.add_insecure_port(f"unix://{path}") == 0:
                raise OSError(f"cannot listen on {path}")
        self._server.start()
        log.info("serving DRA on %s, registration on %s", self._dra_socket, self._registration_socket)

    def stop(self, grace: float = 5.0) -> None:
        self._server.stop(grace).wait()
        for path in (self._registration_socket, self._dra_socket):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def wait(self) -> None:
        self._server.wait_for_termination()
