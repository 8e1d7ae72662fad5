"""`helm lint` and `helm template` of charts/dra-hami with several value sets, checked object by object."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import click
import pytest
import yaml
from chart_render import CHART, INSTALL, REPO_ROOT, HelmError, container, find, kinds, render, run_helm

from dra_hami.cli import main as cli_main

DRIVER = "hami-core-gpu.project-hami.io"

# Value sets that together switch on every template branch.
VALUE_SETS: dict[str, dict[str, str]] = {
    "defaults": INSTALL,
    "policy": {
        "policy.enabled": "true",
        "webhook.clientAuth.caBundle!": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "webhook.clientAuth.commonNames[0]": "kube-apiserver",
        "policy.nodePolicy": "spread",
        "policy.gpuPolicy": "topology",
        "webhook.legacyTranslation": "namespaces",
        "serviceMonitor.enabled": "true",
        "dashboards.enabled": "true",
        "logging.format": "json",
        "logging.level": "debug",
    },
    "cert-manager": {
        "policy.enabled": "true",
        "webhook.clientAuth.enabled": "false",
        "webhook.certManager.enabled": "true",
        "webhook.certManager.issuerRef.name": "corp-ca",
        "webhook.certManager.issuerRef.kind": "ClusterIssuer",
        "webhook.legacyTranslation": "cluster",
        "controller.leaderElect": "false",
        "webhook.claimValidationFailurePolicy": "Ignore",
    },
    "tuned-node": {
        "driverName": "gpu.example.com",
        "devices.splitCount": "4",
        "devices.reservedMemory!": "512Mi",
        "devices.memoryScaling": "1.5",
        "devices.injection": "device-nodes",
        "devices.fakeProfile": "t4x2",
        "deviceClass.config.coreLimitPolicy": "force",
        "deviceClass.config.oomPolicy": "kill",
        "kubeletPlugin.requireLibvgpu": "false",
        "kubeletPlugin.maxUnavailable!": "25%",
        "exporter.enabled": "false",
        "hostPaths.kubeletDir": "/var/lib/k0s/kubelet",
        "hostPaths.vgpuDir": "/opt/vgpu/",
        "health.enabled": "false",
        "health.ignoredXids": "{13,79}",
        **INSTALL,
    },
    "admission-off": {"webhook.enabled": "false"},
    "features-off": {
        **INSTALL,
        "webhook.legacyTranslation": "off",
        "webhook.controlEnvRefusal": "false",
        "webhook.configValidation": "false",
        "webhook.replicas": "3",
        "webhook.podDisruptionBudget.enabled": "false",
        "webhook.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
        ".matchExpressions[0].key": "node-role.kubernetes.io/control-plane",
        "webhook.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
        ".matchExpressions[0].operator": "Exists",
    },
}


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request, helm):
    return request.param, render(helm, VALUE_SETS[request.param])


def test_helm_lint_passes_strict(helm):
    out = run_helm(helm, "lint", "--strict", str(CHART), "--kube-version", "1.36.0")
    assert "0 chart(s) failed" in out
    out = run_helm(
        helm,
        "lint",
        "--strict",
        str(CHART),
        "--set",
        "policy.enabled=true,serviceMonitor.enabled=true,webhook.clientAuth.enabled=false",
    )
    assert "0 chart(s) failed" in out


def test_each_value_set_renders_the_expected_objects(rendered):
    name, objects = rendered
    policy = name in ("policy", "cert-manager")
    webhook = name != "admission-off"
    expected = ["ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "DaemonSet", "DeviceClass",
                "ServiceAccount"]  # fmt: skip
    # pods' control variables, the plugin's own-node slices, the webhook's templates, the controller's writes
    expected += ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"] * (2 + webhook + policy)
    if name != "tuned-node":
        expected.append("Service")  # the exporter's headless Service
    if webhook:  # the default install: admission without policy mode
        expected += ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount", "NetworkPolicy",
                     "ValidatingWebhookConfiguration"]  # fmt: skip
        expected.append("Certificate" if name == "cert-manager" else "Secret")
        if name != "features-off":  # translation off and no policy mode: nothing mutates pods; its PDB is off
            expected += ["MutatingWebhookConfiguration", "PodDisruptionBudget"]
        if name != "cert-manager":
            expected.append("ConfigMap")  # the CA of the API server's admission client certificate
    if policy:
        expected += ["ClusterRole", "ClusterRoleBinding", "Deployment", "Role", "RoleBinding", "Service",
                     "ServiceAccount"]  # fmt: skip
    if name == "policy":
        expected += ["ServiceMonitor"] * 3 + ["ConfigMap"]  # and the Grafana dashboard
    assert kinds(objects) == sorted(expected)
    for obj in objects:
        assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "DeviceClass",
                               "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
                               "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):  # fmt: skip
            assert obj["metadata"]["namespace"] == "dra-hami", obj["metadata"]["name"]


def _command_options(command: str) -> set[str]:
    cmd = cli_main.commands.get(command)
    assert isinstance(cmd, click.Command), f"`dra-hami {command}` is not registered in dra_hami/cli.py"
    names: set[str] = set()
    for param in cmd.params:
        names.update(o for o in param.opts + param.secondary_opts if o.startswith("--"))
    return names


def test_every_container_flag_is_one_the_cli_accepts(rendered):
    """The chart passes only options that `dra-hami <command>` defines (a renamed flag fails here, not in a pod)."""
    _, objects = rendered
    for obj in objects:
        if obj["kind"] not in ("DaemonSet", "Deployment"):
            continue
        for c in obj["spec"]["template"]["spec"]["containers"]:
            assert c["command"][0] == "dra-hami"
            known = _command_options(c["command"][1])
            flags = {a.split("=", 1)[0] for a in c["args"] if a.startswith("--")}
            assert flags <= known, f"{c['name']}: unknown {sorted(flags - known)}"


def test_kubelet_plugin_daemonset_matches_the_values(helm):
    objects = render(helm, VALUE_SETS["tuned-node"])
    ds = find(objects, "DaemonSet", "-kubelet-plugin")
    plugin = container(ds, "kubelet-plugin")
    args = plugin["args"]
    for expected in ("--driver-name=gpu.example.com", "--split-count=4", "--reserved-memory=512Mi",
                     "--memory-scaling=1.5", "--device-injection=device-nodes", "--fake-profile=t4x2",
                     "--no-require-libvgpu", "--plugin-dir=/var/lib/k0s/kubelet/plugins/gpu.example.com",
                     "--registry-dir=/var/lib/k0s/kubelet/plugins_registry", "--vgpu-dir=/opt/vgpu",
                     "--libvgpu-path=/opt/vgpu/libvgpu.so", "--node-name=$(NODE_NAME)", "--no-device-health",
                     "--health-ignored-xids=13,79"):  # fmt: skip
        assert expected in args
    # Fixed socket names: never two plugin pods on a node during an update.
    assert ds["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": "25%", "maxSurge": 0}
    # Every host path is mounted at the same path in the container (the CDI specs and registration carry them).
    volumes = {v["name"]: v["hostPath"]["path"] for v in ds["spec"]["template"]["spec"]["volumes"]}
    for mount in plugin["volumeMounts"]:
        assert mount["mountPath"] == volumes[mount["name"]]
    assert set(volumes.values()) == {"/var/lib/k0s/kubelet/plugins/gpu.example.com", "/var/run/cdi", "/opt/vgpu",
                                     "/var/lib/k0s/kubelet/plugins_registry"}  # fmt: skip
    assert [c["name"] for c in ds["spec"]["template"]["spec"]["containers"]] == ["kubelet-plugin"]  # no exporter
    # Fake GPUs need no NVML from the NVIDIA runtime.
    assert "NVIDIA_VISIBLE_DEVICES" not in {e["name"] for e in plugin["env"]}


def test_defaults_run_the_exporter_beside_the_plugin(helm):
    ds = find(render(helm, INSTALL), "DaemonSet", "-kubelet-plugin")
    exporter = container(ds, "exporter")
    assert exporter["command"] == ["dra-hami", "exporter"]
    assert "--vgpu-dir=/usr/local/vgpu" in exporter["args"]
    assert all(m["readOnly"] for m in exporter["volumeMounts"])
    assert ds["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in ds["spec"]["template"]["spec"][
        "tolerations"
    ]


def test_install_libvgpu_copies_only_when_the_checksum_differs(helm, tmp_path):
    """Run the init container's script for real: first install, no-op on the same file, replace on a new one."""
    values = {**INSTALL, "hostPaths.vgpuDir": str(tmp_path / "host"),
              "kubeletPlugin.libvgpuImagePath": str(tmp_path / "image" / "libvgpu.so")}  # fmt: skip
    ds = find(render(helm, values), "DaemonSet")
    init = container(ds, "install-libvgpu", init=True)
    assert init["command"] == ["/bin/sh", "-c"]
    image_lib = tmp_path / "image" / "libvgpu.so"
    image_lib.parent.mkdir()
    host_lib = tmp_path / "host" / "libvgpu.so"

    def run() -> str:
        done = subprocess.run(["/bin/sh", "-c", init["args"][0]], capture_output=True, text=True, check=True)
        return done.stdout

    image_lib.write_bytes(b"v1")
    assert "installed libvgpu.so" in run() and host_lib.read_bytes() == b"v1"
    inode = host_lib.stat().st_ino
    assert "up to date" in run() and host_lib.stat().st_ino == inode  # untouched
    image_lib.write_bytes(b"v2")
    assert "installed libvgpu.so" in run() and host_lib.read_bytes() == b"v2"
    assert host_lib.stat().st_ino != inode  # renamed over: mounted copies keep the old file
    assert sorted(p.name for p in host_lib.parent.iterdir()) == ["libvgpu.so"]


def test_deviceclass_is_the_one_of_the_examples(helm):
    rendered_class = find(render(helm, INSTALL), "DeviceClass")
    example = yaml.safe_load((REPO_ROOT / "examples" / "deviceclass.yaml").read_text())
    assert rendered_class["metadata"]["name"] == example["metadata"]["name"] == DRIVER
    assert rendered_class["spec"] == example["spec"]


def test_deviceclass_carries_the_cluster_default_vgpu_config(helm):
    objects = render(helm, VALUE_SETS["tuned-node"])
    spec = find(objects, "DeviceClass")["spec"]
    assert spec["selectors"][0]["cel"]["expression"] == (
        "device.driver == 'gpu.example.com' && device.attributes['gpu.example.com'].type == 'hami-gpu'"
    )
    parameters = {"apiVersion": "gpu.hami.io/v1alpha1", "kind": "VGpuConfig", "coreLimitPolicy": "force",
                  "oomPolicy": "kill"}  # fmt: skip
    assert spec["config"] == [{"opaque": {"driver": "gpu.example.com", "parameters": parameters}}]
    # The plugin's own parser accepts what the chart writes.
    from dra_hami.api.vgpu_config import parse_vgpu_config

    parsed = parse_vgpu_config(spec["config"][0]["opaque"]["parameters"], "DeviceClass.spec.config[0]")
    assert parsed.core_limit_policy.value == "force"


def _rules(objects, suffix: str) -> dict[tuple[str, str], set[str]]:
    role = find(objects, "ClusterRole", suffix)
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                out.setdefault((group, res), set()).update(rule["verbs"])
    return out


def test_rbac_is_least_privilege_per_component(helm):
    objects = render(helm, VALUE_SETS["policy"])
    plugin = _rules(objects, "-kubelet-plugin")
    assert plugin == {
        ("resource.k8s.io", "resourceslices"): {"get", "list", "watch", "create", "update", "patch", "delete"},
        ("resource.k8s.io", "resourceclaims"): {"get"},
        ("", "nodes"): {"get"},
        ("", "pods"): {"get"},  # the exporter: which pod uses a claim
        ("", "events"): {"create"},  # the exporter's node guard: an Event on a claim over its limit
    }
    assert ("", "pods") not in _rules(render(helm, {**INSTALL, "exporter.enabled": "false"}), "-kubelet-plugin")
    assert ("", "events") not in _rules(render(helm, {**INSTALL, "exporter.guard.action": "off"}), "-kubelet-plugin")
    controller = _rules(objects, "-controller")
    # 1.36 granular status authorization: allocations need resourceclaims/binding besides the status subresource.
    assert controller[("resource.k8s.io", "resourceclaims/binding")] == {"update", "patch"}
    assert controller[("resource.k8s.io", "resourceclaims/status")] == {"update", "patch"}
    assert controller[("", "pods")] >= {"get", "list", "watch", "patch"}
    assert controller[("", "pods/status")] == {"patch"}
    assert not any("*" in verbs or res == "*" for (_, res), verbs in controller.items())
    lease_role = find(objects, "Role", "-controller")
    assert lease_role["metadata"]["namespace"] == "dra-hami"
    assert lease_role["rules"][0]["resources"] == ["leases"]
    assert controller[("dra-hami.project-hami.io", "gpuquotas")] == {"list", "watch"}  # quota on allocations
    webhook = _rules(objects, "-webhook")
    assert webhook[("dra-hami.project-hami.io", "gpuquotas/status")] == {"update", "patch"}
    assert webhook[("resource.k8s.io", "resourceclaimtemplates")] == {"get", "list", "create", "patch", "delete"}
    # Nothing may write pods, claims or slices but the components that own them.
    assert webhook[("", "pods")] == {"list"} and webhook[("resource.k8s.io", "resourceslices")] == {"list"}
    assert webhook[("resource.k8s.io", "resourceclaims")] == {"get", "list", "watch"}
    assert webhook[("resource.k8s.io", "deviceclasses")] == {"list"}  # classes that select our GPUs
    # Each workload runs under its own ServiceAccount, bound to its own role.
    for workload in (o for o in objects if o["kind"] in ("DaemonSet", "Deployment")):
        sa = workload["spec"]["template"]["spec"]["serviceAccountName"]
        binding = find(objects, "ClusterRoleBinding", sa.removeprefix("dra-hami"))
        assert binding["roleRef"]["name"] == sa and binding["subjects"][0]["name"] == sa


def _openssl(*args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def test_self_signed_webhook_certificate_is_trusted_for_the_service_name(helm, tmp_path):
    objects = render(helm, VALUE_SETS["policy"], namespace="gpu-system")
    secret = find(objects, "Secret", "-webhook-tls")
    files = {}
    for key in ("ca.crt", "tls.crt", "tls.key"):
        files[key] = tmp_path / key
        files[key].write_bytes(base64.b64decode(secret["data"][key]))
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for hook in find(objects, kind)["webhooks"]:
            assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
            assert hook["clientConfig"]["service"]["namespace"] == "gpu-system"
    service = find(objects, "Service", "-webhook")["metadata"]["name"]
    host = f"{service}.gpu-system.svc"
    assert ": OK" in _openssl(
        "verify", "-CAfile", str(files["ca.crt"]), "-verify_hostname", host, str(files["tls.crt"])
    )
    # The key belongs to the certificate.
    pub_cert = _openssl("x509", "-in", str(files["tls.crt"]), "-noout", "-pubkey")
    pub_key = _openssl("pkey", "-in", str(files["tls.key"]), "-pubout")
    assert pub_cert == pub_key
    # The Deployment mounts exactly this Secret.
    deploy = find(objects, "Deployment", "-webhook")
    assert deploy["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"] == secret["metadata"]["name"]


def test_cert_manager_mode_injects_the_ca_instead_of_generating_one(helm):
    objects = render(helm, VALUE_SETS["cert-manager"])
    assert not [o for o in objects if o["kind"] == "Secret"]
    cert = find(objects, "Certificate")
    assert cert["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}
    assert cert["spec"]["secretName"].endswith("-webhook-tls")
    assert "dra-hami-webhook.dra-hami.svc" in cert["spec"]["dnsNames"]
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        config = find(objects, kind)
        assert (
            config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
            == f"dra-hami/{cert['metadata']['name']}"
        )
        assert all("caBundle" not in h["clientConfig"] for h in config["webhooks"])
    # Without an issuerRef the chart brings a self-signed Issuer.
    objects = render(
        helm, {"policy.enabled": "true", "webhook.clientAuth.enabled": "false", "webhook.certManager.enabled": "true"}
    )
    issuer = find(objects, "Issuer")
    assert issuer["spec"] == {"selfSigned": {}}
    assert find(objects, "Certificate")["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"]


def test_pod_webhook_never_blocks_and_skips_system_namespaces(helm):
    objects = render(helm, VALUE_SETS["policy"])
    (hook,) = find(objects, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["failurePolicy"] == "Ignore" and hook["sideEffects"] == "NoneOnDryRun"
    assert hook["clientConfig"]["service"]["path"] == "/mutate-pods"
    assert {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["dra-hami", "kube-system"]} in (
        hook["namespaceSelector"]["matchExpressions"]
    )
    args = container(find(objects, "Deployment", "-webhook"), "webhook")["args"]
    assert "--policy-mode" in args and "--legacy-translation=namespaces" in args
    args = container(find(render(helm, VALUE_SETS["cert-manager"]), "Deployment", "-webhook"), "webhook")["args"]
    assert "--legacy-translation=cluster" in args


def test_the_default_install_admits_without_policy_mode(helm):
    """Issue 14: translation, VGpuConfig validation, the control-variable refusal and GpuQuota run in the default
    install; only the scheduling gate waits for policy.enabled. Two replicas on different nodes, a PDB."""
    objects = render(helm, VALUE_SETS["defaults"])
    deployment = find(objects, "Deployment", "-webhook")
    args = container(deployment, "webhook")["args"]
    for flag in ("--no-policy-mode", "--legacy-translation=namespaces", "--config-validation",
                 "--control-env-refusal", "--quota"):  # fmt: skip
        assert flag in args, flag
    assert not [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-controller")]
    assert deployment["spec"]["replicas"] == 2
    selector = deployment["spec"]["selector"]["matchLabels"]
    (term,) = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"] == {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": selector},
    }
    pdb = find(objects, "PodDisruptionBudget", "-webhook")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    (pods,) = find(objects, "MutatingWebhookConfiguration")["webhooks"]
    assert pods["name"].startswith("pods.") and pods["failurePolicy"] == "Ignore"
    policies = {h["name"].split(".", 1)[0]: h["failurePolicy"] for h in
                find(objects, "ValidatingWebhookConfiguration")["webhooks"]}  # fmt: skip
    assert policies == {"pod-env": "Ignore", "claims": "Fail", "claimtemplates": "Fail"}
    # --set webhook.legacyTranslation=cluster alone renders the webhook too (it rendered nothing before)
    args = container(find(render(helm, {**INSTALL, "webhook.legacyTranslation": "cluster"}), "Deployment", "-webhook"),
                     "webhook")["args"]  # fmt: skip
    assert "--legacy-translation=cluster" in args and "--no-policy-mode" in args


def test_each_feature_has_its_own_switch(helm):
    objects = render(helm, VALUE_SETS["features-off"])
    deployment = find(objects, "Deployment", "-webhook")
    args = container(deployment, "webhook")["args"]
    for flag in ("--legacy-translation=off", "--no-config-validation", "--no-control-env-refusal", "--quota"):
        assert flag in args, flag
    assert deployment["spec"]["replicas"] == 3
    assert list(deployment["spec"]["template"]["spec"]["affinity"]) == ["nodeAffinity"]  # the user's, not ours
    assert not [o for o in objects if o["kind"] in ("MutatingWebhookConfiguration", "PodDisruptionBudget")]
    hooks = find(objects, "ValidatingWebhookConfiguration")["webhooks"]  # GpuQuota still needs the claim hooks
    assert [h["name"].split(".", 1)[0] for h in hooks] == ["claims", "claimtemplates"]
    none = render(helm, {**INSTALL, "webhook.quota": "false", "webhook.configValidation": "false",
                         "webhook.controlEnvRefusal": "false"})  # fmt: skip
    assert not [o for o in none if o["kind"] == "ValidatingWebhookConfiguration"]
    assert "--no-quota" in container(find(none, "Deployment", "-webhook"), "webhook")["args"]
    off = render(helm, VALUE_SETS["admission-off"])
    assert not [o for o in off if "-webhook" in o["metadata"]["name"]]


def test_policy_mode_needs_the_webhook(helm):
    with pytest.raises(HelmError, match=r"policy\.enabled needs webhook\.enabled"):
        render(helm, {**INSTALL, "policy.enabled": "true", "webhook.enabled": "false"})


def test_claim_validation_webhooks_cover_claims_and_templates(helm):
    objects = render(helm, VALUE_SETS["policy"])
    pod_env, *hooks = find(objects, "ValidatingWebhookConfiguration")["webhooks"]
    assert pod_env["clientConfig"]["service"]["path"] == "/validate-pods" and pod_env["sideEffects"] == "None"
    assert [h["rules"][0]["resources"] for h in hooks] == [["resourceclaims"], ["resourceclaimtemplates"]]
    assert all(h["failurePolicy"] == "Fail" and h["clientConfig"]["service"]["path"] == "/validate-claims"
               and h["sideEffects"] == "NoneOnDryRun" for h in hooks)  # fmt: skip
    assert "object.spec.devices" in hooks[0]["matchConditions"][0]["expression"]
    assert "object.spec.spec.devices" in hooks[1]["matchConditions"][0]["expression"]


def test_controller_gets_the_policies_and_its_lease(helm):
    objects = render(helm, VALUE_SETS["policy"])
    args = container(find(objects, "Deployment", "-controller"), "controller")["args"]
    for expected in ("--node-policy=spread", "--gpu-policy=topology", "--leader-elect",
                     "--lease-namespace=$(POD_NAMESPACE)", "--identity=$(POD_NAME)", "--log-format=json",
                     "--log-level=debug"):  # fmt: skip
        assert expected in args
    objects = render(helm, VALUE_SETS["cert-manager"])
    assert "--no-leader-elect" in container(find(objects, "Deployment", "-controller"), "controller")["args"]


def test_service_monitors_select_the_metrics_services(helm):
    objects = render(helm, VALUE_SETS["policy"])
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        wanted = monitor["spec"]["selector"]["matchLabels"]
        (svc,) = [s for s in services.values() if wanted.items() <= s["metadata"]["labels"].items()]
        assert "metrics" in {p["name"] for p in svc["spec"]["ports"]}


def test_long_release_names_keep_object_names_valid(helm):
    objects = render(
        helm,
        {"policy.enabled": "true", "webhook.clientAuth.enabled": "false"},
        release="a-very-long-release-name-for-a-gpu-cluster-x",
    )
    for obj in objects:
        assert len(obj["metadata"]["name"]) <= 63
    assert len({(o["kind"], o["metadata"]["name"]) for o in objects}) == len(objects)


def test_packaged_chart_contains_the_crd(helm, tmp_path: Path):
    out = run_helm(helm, "package", str(CHART), "--destination", str(tmp_path))
    (tgz,) = tmp_path.glob("dra-hami-*.tgz")
    assert str(tgz) in out
    names = subprocess.run(["tar", "-tzf", str(tgz)], capture_output=True, text=True, check=True).stdout.split()
    assert "dra-hami/crds/gpuquota.yaml" in names
    assert "dra-hami/values.schema.json" in names


def test_chart_crd_is_the_repository_crd_verbatim():
    """crds/ is the source; the chart packages an exact copy (Helm reads CRDs only from the chart's crds/)."""
    source = REPO_ROOT / "crds" / "gpuquota.yaml"
    assert (CHART / "crds" / "gpuquota.yaml").read_bytes() == source.read_bytes(), (
        "charts/dra-hami/crds/gpuquota.yaml differs from crds/gpuquota.yaml: "
        "cp crds/gpuquota.yaml charts/dra-hami/crds/"
    )


def test_claim_directories_are_bounded_tmpfs_mounts_that_reach_the_host(helm):
    ds = find(render(helm, INSTALL), "DaemonSet", "-kubelet-plugin")
    plugin, exporter = container(ds, "kubelet-plugin"), container(ds, "exporter")
    assert "--claim-dir-storage=tmpfs" in plugin["args"] and "--claim-dir-size=8Mi" in plugin["args"]
    vgpu = {c["name"]: next(m for m in c["volumeMounts"] if m["name"] == "vgpu-dir") for c in (plugin, exporter)}
    assert vgpu["kubelet-plugin"]["mountPropagation"] == "Bidirectional"  # the runtime must see each claim's tmpfs
    assert vgpu["exporter"]["mountPropagation"] == "HostToContainer"  # and so must the exporter
    sized = find(render(helm, {**INSTALL, "kubeletPlugin.claimDirs.size": "1Mi"}), "DaemonSet", "-kubelet-plugin")
    assert "--claim-dir-size=1Mi" in container(sized, "kubelet-plugin")["args"]


def test_exporter_runs_with_no_capability_unless_the_guard_kills(helm):
    ds = find(render(helm, INSTALL), "DaemonSet", "-kubelet-plugin")
    exporter = container(ds, "exporter")
    assert {"--guard-action=event", "--guard-grace-seconds=30", "--guard-interval=5"} <= set(exporter["args"])
    sc = exporter["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert ds["spec"]["template"]["spec"]["hostPID"] is True  # the driver reports host PIDs
    killing = find(render(helm, {**INSTALL, "exporter.guard.action": "kill"}), "DaemonSet", "-kubelet-plugin")
    assert container(killing, "exporter")["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["KILL"]}
    off = find(render(helm, {**INSTALL, "exporter.guard.action": "off"}), "DaemonSet", "-kubelet-plugin")
    assert "hostPID" not in off["spec"]["template"]["spec"]
