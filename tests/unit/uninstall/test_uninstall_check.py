"""`dra-hami uninstall-check`: which claims of the driver are still reserved (prepared on a node)."""

from __future__ import annotations

from dra_hami.uninstall_check import Reserved, report, reserved_claims

DRIVER = "hami-core-gpu.project-hami.io"


def claim(name, driver=DRIVER, pool="node-a", reserved=("p1",), namespace="team", allocated=True):
    status = {}
    if allocated:
        status["allocation"] = {"devices": {"results": [{"driver": driver, "pool": pool, "device": "hami-gpu-0"}]}}
    if reserved:
        status["reservedFor"] = [{"resource": "pods", "name": n, "uid": f"uid-{n}"} for n in reserved]
    return {"metadata": {"namespace": namespace, "name": name}, "status": status}


def test_only_reserved_claims_of_the_driver_count():
    claims = [
        claim("mine"),
        claim("other-driver", driver="gpu.nvidia.com"),
        claim("released", reserved=()),  # allocated, no pod: the kubelet unprepared it (or never prepared it)
        claim("pending", allocated=False),
        claim("a-first", pool="node-b", namespace="alpha", reserved=("p2", "p3")),
    ]
    assert reserved_claims(claims, DRIVER) == [
        Reserved("alpha", "a-first", ("node-b",), ("pod/p2", "pod/p3")),
        Reserved("team", "mine", ("node-a",), ("pod/p1",)),
    ]


def test_a_claim_with_devices_of_two_drivers_counts_by_its_own_results():
    both = claim("both")
    both["status"]["allocation"]["devices"]["results"].append({"driver": "gpu.nvidia.com", "pool": "node-z"})
    assert reserved_claims([both], DRIVER)[0].nodes == ("node-a",)


def test_report_names_each_claim_its_node_and_what_to_do():
    found = reserved_claims([claim("mine")], DRIVER)
    text = report(found, DRIVER, refuse=True)
    assert "team/mine on node-a reserved by pod/p1" in text
    assert "Delete those pods first" in text and "Refusing the uninstall" in text and "--no-hooks" in text
    assert "Refusing" not in report(found, DRIVER, refuse=False)
    assert "nothing is prepared" in report([], DRIVER, refuse=True)


class _ApiServer:
    """A loopback stand-in for the API server's ResourceClaim list (two pages, as a large cluster answers)."""

    def __init__(self, claims: list[dict]) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        pages = [claims[:1], claims[1:]]
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.paths.append(self.path)
                second = "continue=next" in self.path
                body = {"kind": "ResourceClaimList", "metadata": {"continue": "" if second else "next"},
                        "items": pages[1 if second else 0]}  # fmt: skip
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kubeconfig(self, tmp_path) -> str:
        import yaml

        path = tmp_path / "kubeconfig"
        server = f"http://127.0.0.1:{self.server.server_address[1]}"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "t",
            "clusters": [{"name": "t", "cluster": {"server": server}}],
            "users": [{"name": "t", "user": {}}],
            "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
        }))  # fmt: skip
        return str(path)


def run_check(tmp_path, claims, *args):
    from click.testing import CliRunner

    from dra_hami.cli import main

    api = _ApiServer(claims)
    try:
        result = CliRunner().invoke(main, ["uninstall-check", "--kubeconfig", api.kubeconfig(tmp_path), *args])
    finally:
        api.server.shutdown()
    return result, api.paths


def test_command_refuses_while_a_claim_is_reserved(tmp_path):
    result, paths = run_check(tmp_path, [claim("released", reserved=()), claim("mine")])
    assert result.exit_code == 1, result.output
    assert "team/mine on node-a reserved by pod/p1" in result.output
    assert all(p.startswith("/apis/resource.k8s.io/v1/resourceclaims") for p in paths) and len(paths) == 2


def test_command_only_warns_with_action_warn(tmp_path):
    result, _ = run_check(tmp_path, [claim("released", reserved=()), claim("mine")], "--action", "warn")
    assert result.exit_code == 0 and "team/mine" in result.output and "Refusing" not in result.output


def test_command_lets_the_uninstall_go_when_nothing_is_reserved(tmp_path):
    result, _ = run_check(tmp_path, [claim("released", reserved=()), claim("other", driver="gpu.nvidia.com")])
    assert result.exit_code == 0 and "nothing is prepared" in result.output
