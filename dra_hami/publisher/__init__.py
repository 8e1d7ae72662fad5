"""ResourceSlice publishing: the node's GPUs as one DRA pool, kept in sync with the API server."""

from __future__ import annotations

from dra_hami.api.publisher_config import PublisherConfig
from dra_hami.publisher.publisher import ReconcileResult, SlicePublisher
from dra_hami.publisher.slices import build_pool, device_class

__all__ = ["PublisherConfig", "ReconcileResult", "SlicePublisher", "build_pool", "device_class"]
