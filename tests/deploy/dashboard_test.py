"""The Grafana dashboard and the Prometheus rules against real data: a sinkserve under load
(sessions, one-shot streams, Score, refused requests), scraped by a real Prometheus running the
compose stack's rules; every PromQL expression of the dashboard (and every recording rule) must
return data.
    python dashboard_test.py SINKSERVE_BINARY WORK_DIR
"""
import json
import math
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import yaml

from deploy_support import SOURCE_DIR, Prometheus, Sinkserve, require_tools, stubs, wait_for

COMPOSE = SOURCE_DIR / "deploy/compose"
DASHBOARD = COMPOSE / "grafana/dashboards/sinkserve.json"
# What Grafana substitutes: a rate window of a few scrapes, and the `model_name` and `instance`
# variables' "All".
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$model_name": ".*", "$instance": ".*"}


def committed_dashboard_is_generated() -> dict:
    generated = subprocess.run(
        [sys.executable, str(SOURCE_DIR / "deploy/dashboard/sinkserve_dashboard.py")],
        check=True, capture_output=True, text=True).stdout
    assert generated == DASHBOARD.read_text(), (
        f"{DASHBOARD} differs from the generator's output: run "
        "python deploy/dashboard/sinkserve_dashboard.py > " + str(DASHBOARD.relative_to(SOURCE_DIR)))
    return json.loads(generated)


def expressions(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables substituted) of every panel query."""
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, f"{panel['title']}: unsubstituted variable in {expr}"
            found.append((panel["title"], expr))
    return found


def load(address: str, pb2, pb2_grpc, seconds: float) -> None:
    """Four clients for `seconds`: multi-turn sessions, one-shot streams, Score, and requests the
    server refuses (so that error series exist)."""
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        stub = pb2_grpc.SinkserveStub(grpc.insecure_channel(address))
        session = stub.CreateSession(pb2.CreateSessionRequest()).session_id
        turn = 0
        while time.monotonic() < stop:
            turn += 1
            try:  # restores the session when it was spilled to the store
                for _ in stub.Generate(pb2.GenerateRequest(
                        session_id=session, prompt_text=f"turn {turn}", max_new_tokens=24,
                        ignore_eos=True)):
                    pass
            except grpc.RpcError as error:  # every session in memory is busy: no room now
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            for _ in stub.Generate(pb2.GenerateRequest(
                    prompt_text=f"client {index} one-shot {turn}", max_new_tokens=16,
                    ignore_eos=True)):
                pass
            for _ in stub.Score(pb2.ScoreRequest(text=f"score me {turn} " * 8)):
                pass
            try:  # NOT_FOUND: an unknown session
                for _ in stub.Generate(pb2.GenerateRequest(session_id="s_unknown", prompt_text="x")):
                    pass
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND, error

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main() -> None:
    binary, work = sys.argv[1], Path(sys.argv[2])
    shutil.rmtree(work, ignore_errors=True)  # no Prometheus data or logs of an earlier run
    work.mkdir(parents=True)
    require_tools("prometheus")
    dashboard = committed_dashboard_is_generated()
    queries = expressions(dashboard)
    pb2, pb2_grpc = stubs()

    # Three sessions in memory for four clients' sessions, and a session store: sessions spill
    # and are restored all the time, so the session-store panels have data.
    server = Sinkserve(binary, work, "dashboard-replica",
                       ("--max-cache-bytes", str(64 << 20), "--max-batch", "4",
                        "--max-sessions", "3", "--session-store", str(work / "sessions")))
    server.wait_serving()
    # The compose stack's Prometheus configuration, pointed at this server, scraping faster.
    config = yaml.safe_load((COMPOSE / "prometheus/prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(COMPOSE / "prometheus/rules.yml")]
    config["scrape_configs"][0]["static_configs"] = [
        {"targets": [f"127.0.0.1:{server.metrics_port}"]}]
    prometheus = Prometheus(config, work)
    try:
        prometheus.wait_scraped("sinkserve")
        load(f"127.0.0.1:{server.port}", pb2, pb2_grpc, seconds=12)
        time.sleep(3)  # a few scrapes after the load, inside every rate window

        failures = []
        for title, expr in queries:
            result = prometheus.query(expr)
            values = [float(sample["value"][1]) for sample in result]
            if not values or all(math.isnan(v) for v in values):
                failures.append(f"{title}: {expr} -> {result}")
            else:
                print(f"ok  {title}: {len(values)} series, e.g. {values[0]:.4g}")
        instances = prometheus.label_values("instance", 'sinkserve_model_info{job="sinkserve"}')
        if instances != [f"127.0.0.1:{server.metrics_port}"]:
            failures.append(f"variable instance: {instances}")
        models = prometheus.label_values("model_name", 'sinkserve_model_info{job="sinkserve"}')
        if models != ["demo"]:
            failures.append(f"variable model_name: {models}")
        rules = yaml.safe_load((COMPOSE / "prometheus/rules.yml").read_text())
        records = [rule["record"] for group in rules["groups"] for rule in group["rules"]
                   if "record" in rule]
        for record in records:
            if not wait_for(lambda: prometheus.query(record), 10, record, interval_s=0.5):
                failures.append(f"recording rule {record}: no data")
            else:
                print(f"ok  recording rule {record}")
        assert not failures, "queries without data:\n" + "\n".join(failures)
        print(f"dashboard_test: {len(queries)} panel queries and {len(records)} recording rules "
              "returned data")
    finally:
        prometheus.stop()
        server.stop()


if __name__ == "__main__":
    main()
