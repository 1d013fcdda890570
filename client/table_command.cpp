// sinkserve-bench table: the benchmark table of docs/benchmark-protocol.md, one configuration at a
// time, against running servers (--target) or servers it starts and stops itself (--spawn), so that
// each configuration's peak memory is its own.
#include <cstdio>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/benchmark_table.h"
#include "client/command_common.h"
#include "client/commands.h"
#include "common/base/data_dir.h"
#include "client/server_process.h"

namespace sinkserve::bench {
namespace {

struct Configuration {
  std::string name;
  std::string target;   // host:port, for --target
  int metrics_port = 9464;
  std::string command;  // for --spawn
};

// "NAME=host:port[,metrics=PORT]" or "NAME=COMMAND" (split at the first '=').
absl::StatusOr<Configuration> ParseConfiguration(const std::string& text, bool spawn) {
  const size_t equals = text.find('=');
  if (equals == std::string::npos || equals == 0 || equals + 1 == text.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        spawn ? "--spawn expects NAME=COMMAND" : "--target expects NAME=HOST:PORT[,metrics=PORT]",
        ", got \"", text, "\""));
  }
  Configuration configuration;
  configuration.name = text.substr(0, equals);
  std::string rest = text.substr(equals + 1);
  if (spawn) {
    configuration.command = rest;
    return configuration;
  }
  if (const size_t comma = rest.find(",metrics="); comma != std::string::npos) {
    const std::string port = rest.substr(comma + 9);
    char* end = nullptr;
    configuration.metrics_port = static_cast<int>(std::strtol(port.c_str(), &end, 10));
    if (port.empty() || *end != '\0' || configuration.metrics_port <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("--target: bad metrics port in \"", text, "\""));
    }
    rest = rest.substr(0, comma);
  }
  configuration.target = rest;
  return configuration;
}

// Starts a configuration's server and waits until it serves (model loaded).
absl::StatusOr<Connection> WaitUntilServing(ServerProcess& process, double timeout_s) {
  const auto give_up = std::chrono::steady_clock::now() +
                       std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                           std::chrono::duration<double>(timeout_s));
  const std::string address = absl::StrCat("127.0.0.1:", process.port());
  while (true) {
    absl::StatusOr<Connection> connection = Connect(address, {}, std::chrono::seconds(1));
    if (connection.ok()) return connection;
    if (std::optional<int> code = process.Exited()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the spawned server exited with code ", *code, " before serving; the end of its log (",
          process.log_path(), "):\n", process.LogTail()));
    }
    if (std::chrono::steady_clock::now() >= give_up) {
      return absl::DeadlineExceededError(absl::StrCat("the spawned server did not serve within ",
                                                      timeout_s, " s (--spawn-timeout-s); log: ",
                                                      process.log_path()));
    }
  }
}

}  // namespace

int RunTableCommand(int argc, char** argv) {
  std::vector<std::string> targets, spawns;
  TableOptions options;
  std::vector<std::string> wiki, book;  // default: the evaluation data (client/data_dir.h)
  int64_t ppl_tokens = options.ppl_tokens, chunk_tokens = options.chunk_tokens,
          prompt_tokens = options.prompt_tokens, max_new_tokens = options.max_new_tokens,
          requests = options.generation_requests;
  double spawn_timeout_s = 600;
  std::string json_path, markdown_path, log_dir = std::filesystem::temp_directory_path().string();
  cli::Flags flags(
      "table",
      "Runs the benchmark of docs/benchmark-protocol.md for each configuration and prints its "
      "Markdown table\n"
      "(Wiki PPL, PG19 PPL, Throughput tok/s, TPOT ms, Avg Attn µs, Peak Mem GB). A configuration "
      "is a\nrunning server (--target) or a server command this program starts, measures and "
      "stops (--spawn),\none at a time. Attention time and GPU peak memory come from the "
      "server's /metrics; on the CPU\nbackend Peak Mem is the spawned server's peak RSS (the "
      "weights bytes for a --target).",
      kProgram);
  flags.Add("target", &targets,
            "NAME=HOST:PORT[,metrics=PORT]: a running server (its /metrics port, default 9464)");
  flags.Add("spawn", &spawns,
            "NAME=COMMAND: a server command, e.g. \"NF4=build/server/sinkserve serve --model DIR "
            "--quant nf4 --double-quant\"; --host/--port/--metrics-port are appended");
  flags.Add("wiki-file", &wiki,
            "WikiText-2 test text (repeatable; default wikitext-2-raw/wiki.test.raw in "
            "$SINKSERVE_DATA_DIR, else the repo's data/: scripts/fetch-data.sh)");
  flags.Add("book-file", &book,
            "the book for the PG19 column (repeatable; default books/moby-dick.txt there, "
            "a Gutenberg book: PG19 itself is not here)");
  flags.Add("tokenizer", &options.tokenizer_path,
            "the served model's tokenizer.json (not needed for the demo model)");
  flags.Add("ppl-tokens", &ppl_tokens, "tokens of each text scored (the seed: 1000)");
  flags.Add("chunk-protocol", &chunk_tokens,
            "PPL in independent N-token chunks (the seed: 512); 0 = token by token");
  flags.Add("prompt-tokens", &prompt_tokens, "prompt of the generation run (the seed: ~500)");
  flags.Add("max-new-tokens", &max_new_tokens, "tokens generated per request (the seed: 500)");
  flags.Add("requests", &requests, "generation requests, one at a time (batch 1)");
  flags.Add("spawn-timeout-s", &spawn_timeout_s, "how long a spawned server may take to load");
  flags.Add("log-dir", &log_dir, "where spawned servers' logs go");
  flags.Add("json", &json_path, "also write the rows as JSON to this file (- = stdout)");
  flags.Add("markdown", &markdown_path, "also write the Markdown table to this file");
  if (int exit = cli::ParseFlagsOrExit(flags, argc, argv); exit >= 0) return exit;
  for (auto [texts, relative] : {std::pair{&wiki, "wikitext-2-raw/wiki.test.raw"},
                                 std::pair{&book, "books/moby-dick.txt"}}) {
    if (!texts->empty()) continue;
    absl::StatusOr<std::string> path = DataFile(relative);
    if (!path.ok()) return cli::Fail(path.status());
    texts->push_back(*path);
  }
  options.wiki_files = wiki;
  options.book_files = book;
  options.ppl_tokens = static_cast<int>(ppl_tokens);
  options.chunk_tokens = static_cast<int>(chunk_tokens);
  options.prompt_tokens = static_cast<int>(prompt_tokens);
  options.max_new_tokens = static_cast<int>(max_new_tokens);
  options.generation_requests = static_cast<int>(requests);
  std::vector<Configuration> configurations;
  for (const auto& [list, spawn] : {std::pair{&targets, false}, std::pair{&spawns, true}}) {
    for (const std::string& text : *list) {
      absl::StatusOr<Configuration> configuration = ParseConfiguration(text, spawn);
      if (!configuration.ok()) {
        std::fprintf(stderr, "error: %s\n", std::string(configuration.status().message()).c_str());
        return cli::kExitUsage;
      }
      configurations.push_back(*configuration);
    }
  }
  if (configurations.empty() || ppl_tokens < 2 || chunk_tokens < 0 || chunk_tokens == 1 ||
      prompt_tokens < 1 || max_new_tokens < 2 || requests < 1) {
    std::fprintf(stderr, "error: %s\n",
                 configurations.empty()
                     ? "give at least one --target or --spawn configuration"
                     : "--ppl-tokens >= 2, --chunk-protocol 0 or >= 2, --prompt-tokens >= 1, "
                       "--max-new-tokens >= 2, --requests >= 1");
    return cli::kExitUsage;
  }

  std::vector<TableRow> rows;
  for (size_t i = 0; i < configurations.size(); ++i) {
    const Configuration& configuration = configurations[i];
    std::fprintf(stderr, "sinkserve-bench table: configuration %zu/%zu: %s\n", i + 1,
                 configurations.size(), configuration.name.c_str());
    std::optional<ServerProcess> process;
    absl::StatusOr<Connection> connection;
    std::string metrics_host = "127.0.0.1";
    int metrics_port = configuration.metrics_port;
    if (!configuration.command.empty()) {
      absl::StatusOr<ServerProcess> spawned = ServerProcess::Spawn(
          configuration.command, absl::StrCat(log_dir, "/sinkserve-bench-server-", i, ".log"));
      if (!spawned.ok()) return cli::Fail(spawned.status());
      process.emplace(std::move(*spawned));
      metrics_port = process->metrics_port();
      connection = WaitUntilServing(*process, spawn_timeout_s);
    } else {
      metrics_host = configuration.target.substr(0, configuration.target.rfind(':'));
      connection = Connect(configuration.target);
    }
    if (!connection.ok()) return cli::Fail(connection.status());
    std::function<uint64_t()> peak_rss;
    if (process) peak_rss = [&] { return process->PeakRssBytes(); };
    absl::StatusOr<TableRow> row = MeasureRow(configuration.name, *connection, metrics_host,
                                              metrics_port, options, peak_rss);
    if (!row.ok()) {
      // The rows measured so far are still worth printing.
      if (!rows.empty()) std::fputs(FormatMarkdownTable(rows, options).c_str(), stdout);
      return cli::Fail(absl::Status(row.status().code(),
                                    absl::StrCat(configuration.name, ": ", row.status().message())));
    }
    rows.push_back(*row);
  }
  const std::string table = FormatMarkdownTable(rows, options);
  std::fputs(table.c_str(), stdout);
  for (const auto& [path, text] : {std::pair{json_path, FormatTableJson(rows, options)},
                                   std::pair{markdown_path, table}}) {
    if (path.empty()) continue;
    if (absl::Status status = WriteOutput(path, text); !status.ok()) return cli::Fail(status);
  }
  return cli::kExitOk;
}

}  // namespace sinkserve::bench
