// One row of the benchmark table of docs/benchmark-protocol.md measured against one server,
// and the table.
//
// Columns, as the seed defined them:
//   Wiki PPL, PG19 PPL   Score RPC over the first N tokens (seed: 1000, 512-token chunks)
//   Throughput (tok/s)   generated tokens / wall time of greedy batch-1 generation
//   TPOT (ms)            (last token - first token) / (n - 1), client clock, mean
//   Avg Attn (µs)        the server's sinkserve_attention_seconds{phase="decode"}: sum / count
//                        over the generation run, divided by the layer count = time of one
//                        layer's attention call (the seed's unit, which it mislabelled ms)
//   Peak Mem (GB)        sinkserve_gpu_memory_peak_bytes on a GPU; on the CPU backend the
//                        server process's peak RSS when we spawned it, else the weights bytes
//                        (the source is stated per row)
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/connection.h"
#include "client/load_report.h"

namespace sinkserve::bench {

struct TableOptions {
  std::vector<std::string> wiki_files;  // WikiText-2 test
  std::vector<std::string> book_files;  // the book standing in for PG19
  std::string tokenizer_path;
  int ppl_tokens = 1000;
  int chunk_tokens = 512;  // 0 = token by token
  int prompt_tokens = 500;
  int max_new_tokens = 500;
  int generation_requests = 1;
};

struct TableRow {
  std::string name;
  std::string model;  // the server's model, quantization and backend
  double wiki_ppl = 0;
  double book_ppl = 0;
  double throughput = 0;
  double tpot_ms = 0;
  double attention_us = 0;
  double peak_memory_bytes = 0;
  std::string peak_memory_source;
  LoadReport generation;
};

// Measures one configuration. `metrics_host`/`metrics_port`: the server's /metrics.
// `process_peak_rss`: called after the runs for a spawned server's peak RSS (nullptr: none).
absl::StatusOr<TableRow> MeasureRow(const std::string& name, Connection& connection,
                                    const std::string& metrics_host, int metrics_port,
                                    const TableOptions& options,
                                    const std::function<uint64_t()>& process_peak_rss);

std::string FormatMarkdownTable(const std::vector<TableRow>& rows, const TableOptions& options);
std::string FormatTableJson(const std::vector<TableRow>& rows, const TableOptions& options);

}  // namespace sinkserve::bench
