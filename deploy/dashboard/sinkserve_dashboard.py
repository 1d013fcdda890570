"""The sinkserve Grafana dashboard, built with grafana-foundation-sdk (Grafana's own typed
builders) rather than hand-edited JSON. Every panel query is a PromQL expression over the metric
names of docs/metrics.md (server/metrics.cpp); tests/deploy/dashboard_test.py evaluates each one
against a real Prometheus that scraped a loaded sinkserve.

    python deploy/dashboard/sinkserve_dashboard.py > deploy/compose/grafana/dashboards/sinkserve.json
"""
import json
import sys

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement
from grafana_foundation_sdk.models.prometheus import PromQueryFormat
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync, DataSourceRef, DataTransformerConfig, VariableRefresh)

# The provisioned datasource (deploy/compose/grafana/provisioning/datasources/prometheus.yml).
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")
# Every query selects the models and replicas picked in the `model_name` and `instance`
# variables.
SELECTOR = 'job="sinkserve", model_name=~"$model_name", instance=~"$instance"'
RATE = "$__rate_interval"
NOT_OK = 'code!="OK"'
WRITE_OK, WRITE_FAILED = 'result="ok"', 'result="error"'


def metric(name: str, extra: str = "") -> str:
    """`sinkserve_<name>{job, instance[, extra]}`."""
    return f"sinkserve_{name}{{{SELECTOR}{', ' + extra if extra else ''}}}"


def quantile(q: float, histogram: str, by: str = "") -> str:
    return (f"histogram_quantile({q}, sum by (le{', ' + by if by else ''}) "
            f"(rate({metric(histogram + '_bucket')}[{RATE}])))")


def mean(histogram: str, by: str = "instance") -> str:
    return (f"sum by ({by}) (rate({metric(histogram + '_sum')}[{RATE}])) / "
            f"sum by ({by}) (rate({metric(histogram + '_count')}[{RATE}]))")


def query(expr: str, legend: str, ref: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref)


def quantiles(histogram: str) -> list[prometheus.Dataquery]:
    return [query(quantile(q, histogram), f"p{round(q * 100)}", ref)
            for q, ref in ((0.5, "A"), (0.9, "B"), (0.99, "C"))]


def graph(title: str, unit: str, queries: list[prometheus.Dataquery], description: str,
          width: int = 8) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).datasource(DATASOURCE)
             .unit(unit).height(8).span(width)
             .legend(common.VizLegendOptions().show_legend(True)
                     .display_mode(LegendDisplayMode.LIST)
                     .placement(LegendPlacement.BOTTOM)))
    for q in queries:
        panel = panel.with_target(q)
    return panel


def benchmark_table() -> table.Panel:
    """The columns of the benchmark table (tests/bench/server_bench.cpp) per replica, live."""
    columns = [
        ("streams", metric("num_requests_running"), "none"),
        ("aggregate tok/s", f"sum by (instance) (rate({metric('generation_tokens_total')}[{RATE}]))",
         "none"),
        ("per-stream tok/s", f"1 / ({mean('time_per_output_token_seconds')})", "none"),
        ("mean TTFT", mean("time_to_first_token_seconds"), "s"),
        ("mean TPOT", mean("time_per_output_token_seconds"), "s"),
        ("rows/step", mean("batch_rows"), "none"),
    ]
    panel = (table.Panel().title("Benchmark table, live")
             .description("server_bench's columns per replica, over the rate interval: requests "
                          "running, generated tokens/s, 1/TPOT, mean TTFT and TPOT, rows per "
                          "batched step")
             .datasource(DATASOURCE).height(7).span(24))
    for index, (name, expr, unit) in enumerate(columns):
        ref = chr(ord("A") + index)
        panel = panel.with_target(
            prometheus.Dataquery().expr(expr).instant().format(PromQueryFormat.TABLE)
            .legend_format(name).ref_id(ref))
        panel = panel.override_by_name(f"Value #{ref}", [
            {"id": "displayName", "value": name}, {"id": "unit", "value": unit},
            {"id": "decimals", "value": 2}])
    # One row per replica: join the instant queries on `instance`, keep instance + the values.
    panel = panel.with_transformation(DataTransformerConfig(id_val="merge", options={}))
    panel = panel.with_transformation(DataTransformerConfig(id_val="organize", options={
        "excludeByName": {"Time": True, "job": True, "__name__": True},
        "indexByName": {"instance": 0, **{f"Value #{chr(ord('A') + i)}": i + 1
                                          for i in range(len(columns))}}}))
    return panel


def gauge_stat(title: str, expr: str, unit: str, description: str) -> stat.Panel:
    return (stat.Panel().title(title).description(description).datasource(DATASOURCE)
            .unit(unit).height(4).span(6).with_target(query(expr, "{{instance}}", "A")))


def build() -> dashboard.Dashboard:
    models = (dashboard.QueryVariable("model_name").label("model").datasource(DATASOURCE)
              .query('label_values(sinkserve_model_info{job="sinkserve"}, model_name)')
              .multi(True).include_all(True).all_value(".*")
              .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED))
    instances = (dashboard.QueryVariable("instance").label("replica").datasource(DATASOURCE)
                 .query('label_values(sinkserve_model_info{job="sinkserve", '
                        'model_name=~"$model_name"}, instance)')
                 .multi(True).include_all(True).all_value(".*")
                 .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED))
    by_instance = "{{instance}}"
    return (
        dashboard.Dashboard("sinkserve").uid("sinkserve").tags(["sinkserve", "llm"])
        .description("sinkserve replicas: latency, throughput, attention, memory, sessions, "
                     "queue and errors (docs/metrics.md)")
        .refresh("10s").time("now-30m", "now").tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(models)
        .with_variable(instances)
        .with_row(dashboard.Row("Overview"))
        .with_panel(gauge_stat("Replicas serving", f"count(up{{{SELECTOR}}} == 1)", "none",
                               "Replicas Prometheus scrapes successfully"))
        .with_panel(gauge_stat("Requests running", f"sum({metric('num_requests_running')})",
                               "none", "Generate/Score requests in the running batches"))
        .with_panel(gauge_stat("Sessions", f"sum({metric('sessions_active')})", "none",
                               "Live sessions (their KV caches stay on their replica)"))
        .with_panel(gauge_stat("Generated tokens/s",
                               f"sum(rate({metric('generation_tokens_total')}[{RATE}]))", "none",
                               "All replicas"))
        .with_panel(benchmark_table())
        .with_row(dashboard.Row("Latency"))
        .with_panel(graph("Time to first token", "s",
                          quantiles("time_to_first_token_seconds"),
                          "Arrival to first generated token (queue and prefill included)"))
        .with_panel(graph("Time per output token", "s",
                          quantiles("time_per_output_token_seconds"),
                          "(last token - first token) / (generated tokens - 1), per request"))
        .with_panel(graph("Inter-token latency", "s", quantiles("inter_token_latency_seconds"),
                          "Time between consecutive generated tokens"))
        .with_panel(graph("End-to-end latency", "s",
                          quantiles("e2e_request_latency_seconds"),
                          "Generate and Score: arrival to the last response"))
        .with_panel(graph("Queue time", "s", quantiles("request_queue_time_seconds"),
                          "Arrival to the first engine step"))
        .with_panel(graph("Attention time per step", "s", [
            query(quantile(0.5, "attention_seconds", "phase"), "p50 {{phase}}", "A"),
            query(quantile(0.99, "attention_seconds", "phase"), "p99 {{phase}}", "B"),
            query(mean("attention_seconds", "phase"), "mean {{phase}}", "C")],
            "Measured attention time of one forward step (all layers), by phase"))
        .with_row(dashboard.Row("Throughput"))
        .with_panel(graph("Tokens/s", "none", [
            query(f"sum by (instance) (rate({metric('generation_tokens_total')}[{RATE}]))",
                  "generated {{instance}}", "A"),
            query(f"sum by (instance) (rate({metric('prompt_tokens_total')}[{RATE}]))",
                  "prompt {{instance}}", "B")],
            "Generated tokens and prompt (prefill) tokens per second"))
        .with_panel(graph("Rows per batched step", "none", [
            query(mean("batch_rows"), by_instance, "A")],
            "Continuous batching at work: sessions per decode step"))
        .with_panel(graph("Evicted tokens/s", "none", [
            query(f"sum by (instance) (rate({metric('evicted_tokens_total')}[{RATE}]))",
                  by_instance, "A")],
            "Tokens the streaming KV caches evicted (sink + window policy)"))
        .with_row(dashboard.Row("Memory"))
        .with_panel(graph("GPU memory", "bytes", [
            query(metric("gpu_memory_used_bytes"), "used {{instance}}", "A"),
            query(metric("gpu_memory_peak_bytes"), "peak {{instance}}", "B"),
            query(metric("gpu_memory_total_bytes"), "total {{instance}}", "C")],
            "Held by sinkserve now, the most it has held, the device's size (0 on CPU)"))
        .with_panel(graph("KV cache bytes", "bytes", [
            query(metric("kv_cache_bytes"), "kv {{state}} {{instance}}", "A"),
            query(metric("weights_bytes"), "weights {{instance}}", "B")],
            "KV-cache memory held: active (live sessions and running requests) and pooled "
            "(caches of ended streams kept for reuse); the weights for scale"))
        .with_panel(graph("KV cache usage", "percentunit", [
            query(metric("kv_cache_usage_ratio"), by_instance, "A")],
            "kv_cache_bytes{state=\"active\"} / --max-cache-bytes"))
        .with_row(dashboard.Row("Load and errors"))
        .with_panel(graph("Sessions", "none", [
            query(metric("sessions_active"), by_instance, "A")], "Live sessions per replica"))
        .with_panel(graph("Queue", "none", [
            query(metric("num_requests_waiting"), "waiting {{instance}}", "A"),
            query(metric("num_requests_running"), "running {{instance}}", "B")],
            "Requests waiting for a batch slot, and running"))
        .with_panel(graph("Requests by code", "reqps", [
            query(f"sum by (rpc, code) (rate({metric('requests_total')}[{RATE}]))",
                  "{{rpc}} {{code}}", "A")],
            "Finished RPCs per second by method and gRPC status code"))
        .with_panel(graph("Errors by code", "reqps", [
            query(f"sum by (rpc, code) (rate({metric('requests_total', NOT_OK)}[{RATE}]))",
                  "{{rpc}} {{code}}", "A")],
            "Finished RPCs that did not return OK, per second"))
        .with_row(dashboard.Row("Session store"))
        .with_panel(graph("Sessions written and restored", "ops", [
            query(f"sum by (trigger) (rate({metric('session_store_writes_total', WRITE_OK)}"
                  f"[{RATE}]))", "written {{trigger}}", "A"),
            query(f"sum(rate({metric('session_restores_total')}[{RATE}]))", "restored", "B"),
            query(f"sum by (trigger) (rate({metric('session_store_writes_total', WRITE_FAILED)}"
                  f"[{RATE}]))", "write failed {{trigger}}", "C"),
            query(f"sum by (reason) (rate({metric('session_restore_failures_total')}[{RATE}]))",
                  "restore failed {{reason}}", "D")],
            "--session-store: sessions spilled (evicted), drained or persisted per turn, restored "
            "on their next request, and failures (lease: another replica restoring it; corrupt: "
            "quarantined; model: saved under another model)"))
        .with_panel(graph("Session save and restore time", "s", [
            query(quantile(0.5, "session_save_seconds"), "save p50", "A"),
            query(quantile(0.99, "session_save_seconds"), "save p99", "B"),
            query(quantile(0.5, "session_restore_seconds"), "restore p50", "C"),
            query(quantile(0.99, "session_restore_seconds"), "restore p99", "D")],
            "One session written (copy, encode, write, fsync, rename) or restored (lease, read, "
            "checksums, rebuild)"))
        .with_panel(graph("Session store size", "bytes", [
            query(f"max({metric('session_store_bytes')})", "bytes", "A")],
            "Bytes of session files in the shared store (every replica reports the same store)"))
        .with_panel(graph("Finish reasons", "reqps", [
            query(f"sum by (finish_reason) (rate({metric('request_success_total')}[{RATE}]))",
                  "{{finish_reason}}", "A")],
            "Generate requests that ran, by finish reason"))
    )


def main() -> None:
    json.dump(build().build(), sys.stdout, cls=JSONEncoder, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
