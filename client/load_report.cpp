#include "client/load_report.h"

#include <google/protobuf/util/json_util.h>

#include <cstdio>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace sinkserve::bench {

std::string StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return absl::StrCat("CODE_", static_cast<int>(code));
  }
}

LoadReport MakeReport(const LoadResult& result, const std::optional<Slo>& slo) {
  LoadReport report;
  report.duration_s = result.duration_s;
  report.aborted = result.aborted;
  std::vector<double> ttft, tpot, itl, e2el, server_ttft, server_tpot, server_queue,
      server_attention;
  int good = 0;
  for (const RequestRecord& record : result.records) {
    if (record.code != grpc::StatusCode::OK) {
      ++report.failed;
      ++report.errors[StatusCodeName(record.code)];
      continue;
    }
    ++report.completed;
    report.total_input_tokens += record.prompt_tokens;
    report.total_output_tokens += record.output_tokens;
    ttft.push_back(record.ttft_ms);
    // TPOT is undefined for a single token (vLLM leaves such requests out too).
    if (record.output_tokens > 1) tpot.push_back(record.tpot_ms);
    itl.insert(itl.end(), record.itl_ms.begin(), record.itl_ms.end());
    e2el.push_back(record.e2e_ms);
    if (slo && record.ttft_ms <= slo->ttft_ms && record.tpot_ms <= slo->tpot_ms) ++good;
    if (const auto& server = record.server_result) {
      server_ttft.push_back(server->time_to_first_token_ms());
      if (server->generated_tokens() > 1) server_tpot.push_back(server->time_per_output_token_ms());
      server_queue.push_back(server->queue_time_ms());
      server_attention.push_back(server->attention_time_ms());
      if (static_cast<int>(server->generated_tokens()) != record.output_tokens) {
        ++report.token_count_mismatches;
      }
    }
  }
  if (report.duration_s > 0) {
    report.request_throughput = report.completed / report.duration_s;
    report.output_throughput = report.total_output_tokens / report.duration_s;
    report.total_token_throughput =
        (report.total_input_tokens + report.total_output_tokens) / report.duration_s;
    if (slo) report.request_goodput = good / report.duration_s;
  }
  report.ttft_ms = Summarize(ttft);
  report.tpot_ms = Summarize(tpot);
  report.itl_ms = Summarize(itl);
  report.e2el_ms = Summarize(e2el);
  report.server_ttft_ms = Summarize(server_ttft);
  report.server_tpot_ms = Summarize(server_tpot);
  report.server_queue_ms = Summarize(server_queue);
  report.server_attention_ms = Summarize(server_attention);
  return report;
}

namespace {

// The latency series in report order: (vLLM's short name, human title, summary).
struct Series {
  const char* name;
  const char* title;
  const Summary* summary;
};

std::vector<Series> LatencySeries(const LoadReport& report) {
  return {{"ttft", "Time to first token", &report.ttft_ms},
          {"tpot", "Time per output token (excl. 1st)", &report.tpot_ms},
          {"itl", "Inter-token latency", &report.itl_ms},
          {"e2el", "End-to-end latency", &report.e2el_ms},
          {"server_ttft", "Server-measured TTFT", &report.server_ttft_ms},
          {"server_tpot", "Server-measured TPOT", &report.server_tpot_ms},
          {"server_queue", "Server-measured queue time", &report.server_queue_ms},
          {"server_attention", "Server-measured attention time", &report.server_attention_ms}};
}

}  // namespace

std::vector<std::pair<std::string, double>> ReportFields(const LoadReport& report) {
  std::vector<std::pair<std::string, double>> fields = {
      {"duration", report.duration_s},
      {"completed", report.completed},
      {"failed", report.failed},
      {"total_input_tokens", static_cast<double>(report.total_input_tokens)},
      {"total_output_tokens", static_cast<double>(report.total_output_tokens)},
      {"request_throughput", report.request_throughput},
      {"output_throughput", report.output_throughput},
      {"total_token_throughput", report.total_token_throughput},
  };
  if (report.request_goodput) fields.emplace_back("request_goodput", *report.request_goodput);
  for (const Series& series : LatencySeries(report)) {
    const std::string name = series.name;
    fields.emplace_back("mean_" + name + "_ms", series.summary->mean);
    fields.emplace_back("median_" + name + "_ms", series.summary->p50);
    fields.emplace_back("std_" + name + "_ms", series.summary->stddev);
    fields.emplace_back("p90_" + name + "_ms", series.summary->p90);
    fields.emplace_back("p99_" + name + "_ms", series.summary->p99);
  }
  fields.emplace_back("token_count_mismatches", report.token_count_mismatches);
  return fields;
}

std::string UtcDate() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y%m%d-%H%M%S", &utc);
  return text;
}

std::string FormatJson(const LoadReport& report, const RunInfo& run, const LoadResult* detailed) {
  nlohmann::ordered_json json;
  json["date"] = run.date;
  json["target"] = run.target;
  json["arguments"] = run.arguments;
  json["server_version"] = run.model.server_version();
  std::string model;
  google::protobuf::util::JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(run.model, &model, print);
  json["model"] = nlohmann::ordered_json::parse(model);
  for (const auto& [name, value] : ReportFields(report)) json[name] = value;
  json["errors"] = report.errors;
  json["aborted"] = report.aborted;
  if (detailed != nullptr) {
    nlohmann::ordered_json input_lens = nlohmann::ordered_json::array(), output_lens = input_lens,
                           ttfts = input_lens, itls = input_lens, errors = input_lens;
    for (const RequestRecord& record : detailed->records) {
      input_lens.push_back(record.prompt_tokens);
      output_lens.push_back(record.output_tokens);
      ttfts.push_back(record.ttft_ms / 1e3);
      nlohmann::ordered_json gaps = nlohmann::ordered_json::array();
      for (double itl : record.itl_ms) gaps.push_back(itl / 1e3);
      itls.push_back(gaps);
      errors.push_back(record.code == grpc::StatusCode::OK
                           ? std::string()
                           : absl::StrCat(StatusCodeName(record.code), ": ", record.error));
    }
    json["input_lens"] = input_lens;
    json["output_lens"] = output_lens;
    json["ttfts"] = ttfts;
    json["itls"] = itls;
    json["request_errors"] = errors;
  }
  return json.dump(2) + "\n";
}

std::string FormatCsv(const LoadReport& report) {
  std::vector<std::string> names, values;
  for (const auto& [name, value] : ReportFields(report)) {
    names.push_back(name);
    values.push_back(absl::StrFormat("%.6g", value));
  }
  std::vector<std::string> errors;
  for (const auto& [code, count] : report.errors) errors.push_back(absl::StrCat(code, ":", count));
  names.push_back("errors");
  values.push_back(absl::StrJoin(errors, ";"));
  return absl::StrCat(absl::StrJoin(names, ","), "\n", absl::StrJoin(values, ","), "\n");
}

std::string FormatTable(const LoadReport& report, const std::string& title) {
  std::string out = absl::StrFormat("%s\n%s\n", title, std::string(title.size(), '='));
  auto line = [&](const std::string& label, const std::string& value) {
    absl::StrAppendFormat(&out, "%-40s %s\n", label, value);
  };
  line("Successful requests:", absl::StrCat(report.completed));
  line("Failed requests:", absl::StrCat(report.failed));
  for (const auto& [code, count] : report.errors) line(absl::StrCat("  ", code, ":"), absl::StrCat(count));
  line("Benchmark duration (s):", absl::StrFormat("%.2f", report.duration_s));
  line("Total input tokens:", absl::StrCat(report.total_input_tokens));
  line("Total generated tokens:", absl::StrCat(report.total_output_tokens));
  line("Request throughput (req/s):", absl::StrFormat("%.2f", report.request_throughput));
  if (report.request_goodput) {
    line("Request goodput (req/s):", absl::StrFormat("%.2f", *report.request_goodput));
  }
  line("Output token throughput (tok/s):", absl::StrFormat("%.2f", report.output_throughput));
  line("Total token throughput (tok/s):", absl::StrFormat("%.2f", report.total_token_throughput));
  absl::StrAppendFormat(&out, "\n%-36s %9s %9s %9s %9s %9s\n", "latency (ms)",
                        "mean", "std", "p50", "p90", "p99");
  for (const Series& series : LatencySeries(report)) {
    const Summary& s = *series.summary;
    // The server's own timings come only over gRPC (not from an OpenAI-compatible server).
    if (s.count == 0 && std::string_view(series.name).starts_with("server_")) continue;
    absl::StrAppendFormat(&out, "%-36s %9.2f %9.2f %9.2f %9.2f %9.2f\n", series.title, s.mean,
                          s.stddev, s.p50, s.p90, s.p99);
  }
  if (report.token_count_mismatches > 0) {
    absl::StrAppendFormat(&out, "WARNING: %d requests' client token counts differ from the "
                          "server's final message\n", report.token_count_mismatches);
  }
  return out;
}

}  // namespace sinkserve::bench
