"""``dra-hami webhook``: HTTPS admission for pods (scheduling gate, HAMi legacy translation) and for claims
(VGpuConfig validation, GpuQuota), plus the GpuQuota status reconciler and the legacy-template collector.

Pure decisions live in ``gate``, ``legacy``, ``translate``, ``validate`` and ``review``; ``admission`` wires them
to the API (``kube``), ``server`` speaks HTTPS, ``configuration`` builds the webhook registrations.
"""
