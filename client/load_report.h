// The results of a load run: latency summaries, throughput, goodput and errors, printed as a
// human table, JSON or CSV. Field names follow vLLM's `bench serve` (mean_ttft_ms,
// p99_itl_ms, output_throughput, ...) so existing dashboards and scripts read them.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "client/load_generator.h"
#include "client/stats.h"

namespace sinkserve::bench {

// Service-level objective for goodput: a request counts when it succeeded with
// TTFT <= ttft_ms and TPOT <= tpot_ms (client-measured).
struct Slo {
  double ttft_ms = 0;
  double tpot_ms = 0;
};

struct LoadReport {
  double duration_s = 0;
  int completed = 0;  // requests that ended OK
  int failed = 0;
  std::map<std::string, int> errors;  // gRPC status code name -> count
  std::string aborted;
  long long total_input_tokens = 0;   // prompt tokens of completed requests
  long long total_output_tokens = 0;  // tokens received by completed requests
  double request_throughput = 0;      // completed / duration
  double output_throughput = 0;       // output tokens / duration
  double total_token_throughput = 0;  // (input + output tokens) / duration
  std::optional<double> request_goodput;  // with an SLO
  Summary ttft_ms, tpot_ms, itl_ms, e2el_ms;
  // The server's own view of the same requests (GenerateResult), for comparison.
  Summary server_ttft_ms, server_tpot_ms, server_queue_ms, server_attention_ms;
  // Client token counts that disagree with the server's final message (should be 0).
  int token_count_mismatches = 0;
};

LoadReport MakeReport(const LoadResult& result, const std::optional<Slo>& slo);

// Scalar fields in a fixed order, named as in vLLM's bench serve JSON: one source for the
// JSON object and the CSV row.
std::vector<std::pair<std::string, double>> ReportFields(const LoadReport& report);

// What ran, at the top of the JSON (as vLLM's bench serve writes date, model and the like).
struct RunInfo {
  std::string date;                    // UTC, as vLLM writes it: "20261205-071500"
  std::string target;                  // host:port
  std::vector<std::string> arguments;  // the command line
  v1::ModelInfo model;                 // GetModelInfo
};

// Now in RunInfo::date's format.
std::string UtcDate();

std::string FormatTable(const LoadReport& report, const std::string& title);
// One object: `run`, then the report's fields. With `detailed` (--save-detailed), also one
// entry per request in completion order, under vLLM's names and units: input_lens,
// output_lens, ttfts (s), itls (s, a list per request), and request_errors ("" when OK; vLLM's
// "errors", renamed as that key holds the counts by status code here).
std::string FormatJson(const LoadReport& report, const RunInfo& run,
                       const LoadResult* detailed = nullptr);
std::string FormatCsv(const LoadReport& report);    // a header line and one row

// "UNAVAILABLE", "DEADLINE_EXCEEDED", ...
std::string StatusCodeName(grpc::StatusCode code);

}  // namespace sinkserve::bench
