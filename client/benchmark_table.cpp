#include "client/benchmark_table.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/load_generator.h"
#include "client/metrics_scraper.h"
#include "client/perplexity_client.h"
#include "client/prompt_source.h"
#include "nlohmann/json.hpp"
#include "common/cli/progress_bar.h"

namespace sinkserve::bench {
namespace {

constexpr char kDecodeAttentionSum[] = "sinkserve_attention_seconds_sum{phase=\"decode\"}";
constexpr char kDecodeAttentionCount[] = "sinkserve_attention_seconds_count{phase=\"decode\"}";

absl::StatusOr<double> TextPerplexity(Connection& connection, const Tokenizer& tokenizer,
                                      const std::vector<std::string>& files,
                                      const TableOptions& options, const std::string& label) {
  absl::StatusOr<std::vector<int32_t>> ids = TokenizeFiles(tokenizer, files, options.ppl_tokens);
  if (!ids.ok()) return ids.status();
  cli::ProgressBar progress(label, static_cast<int64_t>(ids->size()));
  absl::StatusOr<PerplexityResult> result =
      ScorePerplexity(connection, *ids, options.chunk_tokens, std::nullopt,
                      [&](int64_t scored, int64_t) { progress.Update(scored); });
  progress.Finish();
  if (!result.ok()) return result.status();
  return result->perplexity;
}

}  // namespace

absl::StatusOr<TableRow> MeasureRow(const std::string& name, Connection& connection,
                                    const std::string& metrics_host, int metrics_port,
                                    const TableOptions& options,
                                    const std::function<uint64_t()>& process_peak_rss) {
  TableRow row;
  row.name = name;
  const v1::ModelInfo& model = connection.model;
  row.model = absl::StrCat(model.model_name(), model.demo() ? " [DEMO: random weights]" : "",
                           ", quantization ", model.quantization(), ", ", model.backend());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      LoadTokenizer(options.tokenizer_path, model);
  if (!tokenizer.ok()) return tokenizer.status();

  // Perplexity under the server's default cache policy: the configuration is the server.
  absl::StatusOr<double> wiki = TextPerplexity(connection, **tokenizer, options.wiki_files,
                                               options, name + ": wiki PPL");
  if (!wiki.ok()) return wiki.status();
  row.wiki_ppl = *wiki;
  absl::StatusOr<double> book = TextPerplexity(connection, **tokenizer, options.book_files,
                                               options, name + ": book PPL");
  if (!book.ok()) return book.status();
  row.book_ppl = *book;

  // Speed: greedy batch-1 generation after a prompt from the wiki text, as the seed did; one
  // short request first so that first-touch page faults do not land in the measurement.
  absl::StatusOr<PromptSource> prompts =
      PromptSource::FromFiles(**tokenizer, options.wiki_files, options.prompt_tokens);
  if (!prompts.ok()) return prompts.status();
  LoadOptions load;
  load.concurrency = 1;
  load.conversations = 1;
  load.max_new_tokens = 8;
  if (LoadResult warm = RunLoad(connection, *prompts, load); !warm.aborted.empty()) {
    return absl::UnavailableError(warm.aborted);
  }
  absl::StatusOr<MetricsSnapshot> before = ScrapeMetrics(metrics_host, metrics_port);
  if (!before.ok()) return before.status();
  load.conversations = options.generation_requests;
  load.max_new_tokens = options.max_new_tokens;
  cli::ProgressBar progress(name + ": generation", options.generation_requests, "req");
  const LoadResult generation =
      RunLoad(connection, *prompts, load, [&](const LoadResult& so_far, double) {
        progress.Update(static_cast<int64_t>(so_far.records.size()));
      });
  progress.Finish();
  absl::StatusOr<MetricsSnapshot> after = ScrapeMetrics(metrics_host, metrics_port);
  if (!after.ok()) return after.status();
  row.generation = MakeReport(generation, std::nullopt);
  if (!generation.aborted.empty() || row.generation.failed > 0) {
    return absl::UnavailableError(absl::StrCat(
        "generation run failed: ",
        generation.aborted.empty() ? generation.records.front().error : generation.aborted));
  }
  row.throughput = row.generation.output_throughput;
  row.tpot_ms = row.generation.tpot_ms.mean;
  const double steps = after->Value(kDecodeAttentionCount) - before->Value(kDecodeAttentionCount);
  if (steps > 0 && model.num_layers() > 0) {
    row.attention_us = (after->Value(kDecodeAttentionSum) - before->Value(kDecodeAttentionSum)) /
                       steps / model.num_layers() * 1e6;
  }
  const double gpu_peak = after->Value("sinkserve_gpu_memory_peak_bytes");
  const uint64_t rss = process_peak_rss ? process_peak_rss() : 0;
  if (gpu_peak > 0) {
    row.peak_memory_bytes = gpu_peak;
    row.peak_memory_source = "GPU peak (sinkserve_gpu_memory_peak_bytes)";
  } else if (rss > 0) {
    row.peak_memory_bytes = static_cast<double>(rss);
    row.peak_memory_source = "CPU backend: server process peak RSS (VmHWM)";
  } else {
    row.peak_memory_bytes = after->Value("sinkserve_weights_bytes");
    row.peak_memory_source = "CPU backend, server not spawned: weights bytes only";
  }
  return row;
}

std::string FormatMarkdownTable(const std::vector<TableRow>& rows, const TableOptions& options) {
  std::string out =
      "| Configuration | Wiki PPL | PG19 PPL | Throughput (tok/s) | TPOT (ms) | Avg Attn (µs) | "
      "Peak Mem (GB) |\n| --- | --- | --- | --- | --- | --- | --- |\n";
  for (const TableRow& row : rows) {
    absl::StrAppendFormat(&out, "| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", row.name,
                          row.wiki_ppl, row.book_ppl, row.throughput, row.tpot_ms,
                          row.attention_us, row.peak_memory_bytes / 1e9);
  }
  absl::StrAppendFormat(
      &out,
      "\nPPL: first %d tokens, %s, under each server's default cache policy. Speed: greedy, "
      "%d-token prompt, %d new tokens, batch 1, %d request(s), client clock. Avg Attn: one "
      "layer's attention call during generation (server metric). Models and memory sources:\n",
      options.ppl_tokens,
      options.chunk_tokens > 0 ? absl::StrCat(options.chunk_tokens, "-token chunks")
                               : std::string("token by token"),
      options.prompt_tokens, options.max_new_tokens, options.generation_requests);
  for (const TableRow& row : rows) {
    absl::StrAppendFormat(&out, "- %s: %s; Peak Mem = %s\n", row.name, row.model,
                          row.peak_memory_source);
  }
  return out;
}

std::string FormatTableJson(const std::vector<TableRow>& rows, const TableOptions& options) {
  nlohmann::ordered_json json;
  json["protocol"] = {{"ppl_tokens", options.ppl_tokens},
                      {"chunk_tokens", options.chunk_tokens},
                      {"prompt_tokens", options.prompt_tokens},
                      {"max_new_tokens", options.max_new_tokens},
                      {"generation_requests", options.generation_requests}};
  json["configurations"] = nlohmann::ordered_json::array();
  for (const TableRow& row : rows) {
    nlohmann::ordered_json generation;
    for (const auto& [field, value] : ReportFields(row.generation)) generation[field] = value;
    json["configurations"].push_back({{"name", row.name},
                                      {"model", row.model},
                                      {"wiki_ppl", row.wiki_ppl},
                                      {"pg19_ppl", row.book_ppl},
                                      {"throughput_tok_s", row.throughput},
                                      {"tpot_ms", row.tpot_ms},
                                      {"avg_attention_us", row.attention_us},
                                      {"peak_memory_bytes", row.peak_memory_bytes},
                                      {"peak_memory_source", row.peak_memory_source},
                                      {"generation", generation}});
  }
  return json.dump(2) + "\n";
}

}  // namespace sinkserve::bench
