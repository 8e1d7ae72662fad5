"""The objects dra-hami defines or persists, one module each: the place to read an object's shape.

* ``vgpu_config``: ``gpu.hami.io/v1alpha1 VGpuConfig``, the opaque config of a claim or DeviceClass (validated by
  the webhook, applied by the kubelet plugin).
* ``gpu_quota``: ``dra-hami.project-hami.io/v1alpha1 GpuQuota``, a namespace's GPU budget (the CRD is
  crds/gpuquota.yaml).
* ``fake_profile``: the YAML of a fake GPU profile (``--fake-profile``; built-in ones in discovery/profiles/).
* ``publisher_config``: what the kubelet plugin publishes as ResourceSlices (driver, node, HAMi's sharing knobs).
* ``checkpoint``: the kubelet plugin's checkpoint file of prepared claims (written by the plugin, read by the
  plugin at start and by the exporter).

The wire format of each is fixed: an existing object or file must keep loading after a change here.
"""
