"""deploy/ validated by the tools that read it: Kubernetes manifests against the Kubernetes
schemas (kubernetes-validate, strict), the compose files by Compose v2's own parser and the
compose-spec schema, the Prometheus configuration and rules by promtool (with the alert unit
tests); and the contracts between them and the server (drain vs. termination grace, probes on
grpc.health.v1, consistent hashing on x-session-id, the dashboard's datasource).
    python manifests_test.py
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from deploy_support import SOURCE_DIR, require_tools

DEPLOY = SOURCE_DIR / "deploy"
K8S_FILES = ["deployment.yaml", "session-store.yaml", "service.yaml", "ingress.yaml", "hpa.yaml",
             "prometheus-adapter-rules.yaml"]
BIN = Path(sys.executable).parent


def run(*argv: str, cwd: Path = SOURCE_DIR) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def flag(args: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in args if a.startswith(f"--{name}="))


def kubernetes() -> None:
    k8s = DEPLOY / "k8s"
    for version in ("1.29", "1.31"):
        run(str(BIN / "kubernetes-validate"), "--strict", "-k", version,
            *(str(k8s / f) for f in K8S_FILES))
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(K8S_FILES)

    deployment = yaml.safe_load((k8s / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    grace = float(flag(container["args"], "grace-period-s"))
    # The drain must end before the kubelet's SIGKILL, with time left for gRPC's shutdown.
    assert pod["terminationGracePeriodSeconds"] >= grace + 5, (grace, pod)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == 50051, probe
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {p["containerPort"] for p in container["ports"]} == {50051, 8000, 9464}
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
    # Every replica mounts the one shared session store, where --session-store points.
    store = yaml.safe_load((k8s / "session-store.yaml").read_text())
    assert store["spec"]["accessModes"] == ["ReadWriteMany"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "sessions")
    volume = next(v for v in pod["volumes"] if v["name"] == "sessions")
    assert volume["persistentVolumeClaim"]["claimName"] == store["metadata"]["name"]
    assert flag(container["args"], "session-store") == mount["mountPath"]

    ingress = yaml.safe_load((k8s / "ingress.yaml").read_text())
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$http_x_session_id"
    assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    hpa = yaml.safe_load((k8s / "hpa.yaml").read_text())
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    adapter = (k8s / "prometheus-adapter-rules.yaml").read_text()
    assert f"as: {metric}" in adapter and metric in (SOURCE_DIR / "server/metrics.cpp").read_text()
    print(f"ok  k8s: {', '.join(K8S_FILES)} (strict, 1.29 and 1.31), drain {grace} s < "
          f"{pod['terminationGracePeriodSeconds']} s, HPA on {metric}")


def compose() -> None:
    directory = DEPLOY / "compose"
    files = [directory / "docker-compose.yml", directory / "docker-compose.gpu.yml"]
    run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", *map(str, files))
    config = yaml.safe_load(run(str(BIN / "docker-compose"), "-f", str(files[0]), "config"))
    gpu = yaml.safe_load(run(str(BIN / "docker-compose"), "-f", str(files[0]), "-f",
                             str(files[1]), "config"))
    sinkserve = config["services"]["sinkserve"]
    assert {int(p["target"]) for p in sinkserve["ports"]} == {50051, 8000, 9464}
    assert sinkserve["volumes"][0]["target"] == "/models"
    # stop_grace_period (30 s) above the server's default --grace-period-s (20 s).
    assert re.fullmatch(r"30s", sinkserve["stop_grace_period"]), sinkserve["stop_grace_period"]
    assert set(config["services"]) == {"sinkserve", "prometheus", "grafana"}
    gpu_sinkserve = gpu["services"]["sinkserve"]
    assert gpu_sinkserve["build"]["args"]["BASE_IMAGE"].startswith("nvidia/cuda:")
    assert gpu_sinkserve["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"

    datasources = yaml.safe_load(
        (directory / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasources["datasources"][0]["uid"]
    dashboard = json.loads((directory / "grafana/dashboards/sinkserve.json").read_text())
    used = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    assert used == {uid}, (used, uid)
    print("ok  compose: compose-spec schema, `docker compose config` (CPU and GPU), Grafana "
          "provisioning")


def prometheus() -> None:
    directory = DEPLOY / "compose/prometheus"
    run("promtool", "check", "config", "prometheus.yml", cwd=directory)
    run("promtool", "test", "rules", "rules_test.yml", cwd=directory)
    print("ok  prometheus: promtool check config, promtool test rules")


def main() -> None:
    require_tools("promtool")
    kubernetes()
    compose()
    prometheus()


if __name__ == "__main__":
    main()
