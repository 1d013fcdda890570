// sinkserve-bench against real servers on loopback (the demo model): token counts against the
// server's, percentiles on known series, the table's columns, a server killed mid-run.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "client/commands.h"
#include "client/connection.h"
#include "client/load_generator.h"
#include "client/load_report.h"
#include "client/metrics_scraper.h"
#include "client/stats.h"
#include "common/client_security/client_security.h"
#include "nlohmann/json.hpp"
#include "tests/server/server_test_util.h"

namespace sinkserve::bench {
namespace {

using testing::TestServer;

// Runs a sinkserve-bench subcommand in-process, as main() would.
int RunCommand(int (*command)(int, char**), std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  return command(static_cast<int>(argv.size()), argv.data());
}

std::string ReadAll(const std::filesystem::path& path) {
  std::ifstream file(path);
  return std::string(std::istreambuf_iterator<char>(file), {});
}

std::filesystem::path TempPath(const std::string& name) {
  return std::filesystem::temp_directory_path() / (name + "-" + std::to_string(getpid()));
}

TEST(Stats, PercentilesOfAKnownSeriesMatchNumpy) {
  // np.percentile(range(1, 11), [50, 90, 99]) = 5.5, 9.1, 9.91; np.std = sqrt(8.25).
  std::vector<double> series = {7, 1, 10, 4, 2, 9, 3, 8, 6, 5};  // order must not matter
  const Summary summary = Summarize(series);
  EXPECT_EQ(summary.count, 10);
  EXPECT_DOUBLE_EQ(summary.mean, 5.5);
  EXPECT_NEAR(summary.stddev, std::sqrt(8.25), 1e-12);
  EXPECT_NEAR(summary.p50, 5.5, 1e-12);
  EXPECT_NEAR(summary.p90, 9.1, 1e-12);
  EXPECT_NEAR(summary.p99, 9.91, 1e-12);
  EXPECT_DOUBLE_EQ(summary.min, 1);
  EXPECT_DOUBLE_EQ(summary.max, 10);
  EXPECT_DOUBLE_EQ(Percentile({42}, 99), 42);
  EXPECT_DOUBLE_EQ(Percentile({}, 50), 0);
}

TEST(Report, GoodputCountsRequestsWithinBothSlos) {
  LoadResult result;
  result.duration_s = 2;
  for (double ttft : {10.0, 20.0, 30.0}) {
    RequestRecord record;
    record.ttft_ms = ttft;
    record.tpot_ms = ttft / 10;
    record.output_tokens = 4;
    result.records.push_back(record);
  }
  RequestRecord refused;
  refused.code = grpc::StatusCode::RESOURCE_EXHAUSTED;
  result.records.push_back(refused);
  const LoadReport report = MakeReport(result, Slo{.ttft_ms = 25, .tpot_ms = 2.5});
  EXPECT_EQ(report.completed, 3);
  EXPECT_EQ(report.failed, 1);
  EXPECT_EQ(report.errors.at("RESOURCE_EXHAUSTED"), 1);
  EXPECT_DOUBLE_EQ(*report.request_goodput, 1.0);  // 2 good requests / 2 s
  EXPECT_DOUBLE_EQ(report.output_throughput, 6.0);
  const std::string csv = FormatCsv(report);
  EXPECT_EQ(csv.substr(0, csv.find(',')), "duration");
  EXPECT_NE(csv.find("mean_ttft_ms"), std::string::npos);
  EXPECT_NE(csv.find("RESOURCE_EXHAUSTED:1"), std::string::npos);
}

TEST(Metrics, ParsesSeriesWithLabels) {
  const MetricsSnapshot snapshot = MetricsSnapshot::Parse(
      "# HELP x y\nsinkserve_attention_seconds_sum{phase=\"decode\"} 0.25\n"
      "sinkserve_model_info{model=\"a b\"} 1\nsinkserve_weights_bytes 1.5e+06\n"
      "sinkserve_kv_cache_bytes{model_name=\"m\"} 7\n"
      "sinkserve_requests_total{code=\"OK\",model_name=\"m\",rpc=\"Score\"} 3\n"
      "sinkserve_batch_rows_bucket{model_name=\"m \\\"q\\\"\",le=\"1\"} 2\n");
  EXPECT_DOUBLE_EQ(snapshot.Value("sinkserve_attention_seconds_sum{phase=\"decode\"}"), 0.25);
  EXPECT_DOUBLE_EQ(snapshot.Value("sinkserve_model_info{model=\"a b\"}"), 1);
  EXPECT_DOUBLE_EQ(snapshot.Value("sinkserve_weights_bytes"), 1.5e6);
  // The server's model_name label is left out of the keys.
  EXPECT_DOUBLE_EQ(snapshot.Value("sinkserve_kv_cache_bytes"), 7);
  EXPECT_DOUBLE_EQ(snapshot.Value("sinkserve_requests_total{code=\"OK\",rpc=\"Score\"}"), 3);
  EXPECT_DOUBLE_EQ(snapshot.Value("sinkserve_batch_rows_bucket{le=\"1\"}"), 2);
  EXPECT_FALSE(snapshot.Has("absent"));
}

TEST(Load, ClientTokenCountsEqualTheServers) {
  TestServer server;
  absl::StatusOr<Connection> connection =
      Connect("127.0.0.1:" + std::to_string(server.server().port()));
  ASSERT_TRUE(connection.ok()) << connection.status();
  absl::StatusOr<MetricsSnapshot> before =
      ScrapeMetrics("127.0.0.1", server.server().metrics_port());
  ASSERT_TRUE(before.ok()) << before.status();

  PromptSource prompts = PromptSource::Random(connection->model.vocab_size(), 12, 1);
  LoadOptions options;
  options.concurrency = 3;
  options.conversations = 5;
  options.turns = 2;
  options.max_new_tokens = 9;
  const LoadResult result = RunLoad(*connection, prompts, options);
  ASSERT_TRUE(result.aborted.empty()) << result.aborted;
  ASSERT_EQ(result.records.size(), 10u);
  int64_t client_tokens = 0;
  for (const RequestRecord& record : result.records) {
    ASSERT_EQ(record.code, grpc::StatusCode::OK) << record.error;
    ASSERT_TRUE(record.server_result.has_value());
    EXPECT_EQ(record.output_tokens, 9);
    EXPECT_EQ(static_cast<int>(record.server_result->generated_tokens()), record.output_tokens);
    // A continuing turn also feeds the session's last generated token.
    EXPECT_EQ(static_cast<int>(record.server_result->prompt_tokens()),
              record.prompt_tokens + (record.turn > 0 ? 1 : 0));
    EXPECT_GT(record.ttft_ms, 0);
    EXPECT_GE(record.e2e_ms, record.ttft_ms);
    EXPECT_LE(record.itl_ms.size(), 8u);
    client_tokens += record.output_tokens;
  }
  const LoadReport report = MakeReport(result, std::nullopt);
  EXPECT_EQ(report.token_count_mismatches, 0);
  EXPECT_EQ(report.total_output_tokens, 90);
  absl::StatusOr<MetricsSnapshot> after =
      ScrapeMetrics("127.0.0.1", server.server().metrics_port());
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->Value("sinkserve_generation_tokens_total{api=\"grpc\"}") -
                before->Value("sinkserve_generation_tokens_total{api=\"grpc\"}"),
            static_cast<double>(client_tokens));
  // Every conversation closed its session.
  EXPECT_TRUE(testing::WaitFor([&] {
    grpc::ClientContext context;
    v1::ListSessionsResponse sessions;
    return connection->stub->ListSessions(&context, {}, &sessions).ok() &&
           sessions.sessions_size() == 0;
  }));
}

// The bench as a client of a deployed server: TLS (verified against the server's certificate)
// and a bearer token, 3-turn conversations whose every request names the client's session id
// as x-session-id metadata (the server takes it as the session's id), and the JSON's run
// metadata and per-request details.
TEST(Load, TlsAndTokenMultiTurnSessionsAndRunMetadata) {
  testing::TempDir dir;
  testing::MakeCertificate(dir);
  server::ServerOptions options = testing::TestServerOptions();
  options.tls_cert_file = dir.File("cert.pem");
  options.tls_key_file = dir.File("key.pem");
  options.auth_token = "token-" + std::to_string(testing::TestSeed());
  testing::WriteTextFile(dir.File("token"), options.auth_token + "\n");
  TestServer server(options);
  const std::string target = "localhost:" + std::to_string(server.server().port());

  ClientSecurity security;
  security.tls_ca = dir.File("cert.pem");
  security.auth_token_file = dir.File("token");
  absl::StatusOr<Connection> connection = Connect(target, security);
  ASSERT_TRUE(connection.ok()) << connection.status();
  PromptSource prompts = PromptSource::Random(connection->model.vocab_size(), 8, 1);
  LoadOptions load;
  load.concurrency = 2;
  load.conversations = 3;
  load.turns = 3;
  load.max_new_tokens = 4;
  const LoadResult result = RunLoad(*connection, prompts, load);
  ASSERT_EQ(result.records.size(), 9u);
  std::map<int, std::set<std::string>> sessions;  // conversation -> the session ids it saw
  for (const RequestRecord& record : result.records) {
    ASSERT_EQ(record.code, grpc::StatusCode::OK) << record.error;
    ASSERT_TRUE(record.server_result.has_value());
    sessions[record.conversation].insert(record.server_result->session().session_id());
  }
  ASSERT_EQ(sessions.size(), 3u);
  for (const auto& [conversation, ids] : sessions) {
    ASSERT_EQ(ids.size(), 1u) << "conversation " << conversation << " changed sessions";
    EXPECT_EQ(ids.begin()->rfind("bench-", 0), 0u) << *ids.begin() << ": not the client's name";
  }

  // The command: refused without the token or without TLS, then the JSON with run metadata.
  const std::filesystem::path json = TempPath("tls.json");
  const std::vector<std::string> base = {"--target",        target,       "--requests",       "2",
                                         "--turns",         "3",          "--max-new-tokens", "3",
                                         "--prompt-tokens", "8",          "--warmup",         "0",
                                         "--json",          json.string()};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), base.begin(), base.end());
    return extra;
  };
  EXPECT_EQ(RunCommand(RunLoadCommand, with({"--tls-ca", dir.File("cert.pem")})), 1);
  EXPECT_EQ(RunCommand(RunLoadCommand, with({"--auth-token-file", dir.File("token")})), 1);
  ASSERT_EQ(RunCommand(RunLoadCommand, with({"--tls-ca", dir.File("cert.pem"), "--auth-token-file",
                                             dir.File("token"), "--save-detailed"})),
            0);
  const nlohmann::json report = nlohmann::json::parse(ReadAll(json));
  EXPECT_EQ(report["completed"], 6);
  EXPECT_TRUE(report["errors"].empty()) << report["errors"];
  const std::string date = report["date"];
  EXPECT_EQ(date.size(), 15u) << date;  // 20261205-071500
  EXPECT_EQ(date[8], '-') << date;
  EXPECT_EQ(report["target"], target);
  EXPECT_EQ(report["arguments"][0], "sinkserve-bench");
  EXPECT_EQ(report["arguments"][1], "load");
  EXPECT_NE(std::find(report["arguments"].begin(), report["arguments"].end(), "--save-detailed"),
            report["arguments"].end());
  EXPECT_EQ(report["model"]["model_name"], connection->model.model_name());
  EXPECT_EQ(report["model"]["vocab_size"], connection->model.vocab_size());
  EXPECT_EQ(report["server_version"], connection->model.server_version());
  EXPECT_FALSE(report["server_version"].get<std::string>().empty());
  ASSERT_EQ(report["output_lens"].size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(report["input_lens"][i], 8);
    EXPECT_EQ(report["output_lens"][i], 3);
    EXPECT_GT(report["ttfts"][i].get<double>(), 0);
    EXPECT_LT(report["ttfts"][i].get<double>(), 60);  // seconds, as vLLM writes them
    EXPECT_LE(report["itls"][i].size(), 2u);
    EXPECT_EQ(report["request_errors"][i], "");
  }
  std::filesystem::remove(json);
}

TEST(Load, OpenLoopStartsTheRequestedConversations) {
  TestServer server;
  absl::StatusOr<Connection> connection =
      Connect("127.0.0.1:" + std::to_string(server.server().port()));
  ASSERT_TRUE(connection.ok()) << connection.status();
  PromptSource prompts = PromptSource::Random(connection->model.vocab_size(), 8, 2);
  LoadOptions options;
  options.rate = 40;
  options.burstiness = 0.5;
  options.conversations = 6;
  options.max_new_tokens = 4;
  const LoadResult result = RunLoad(*connection, prompts, options);
  EXPECT_TRUE(result.aborted.empty()) << result.aborted;
  ASSERT_EQ(result.records.size(), 6u);
  for (const RequestRecord& record : result.records) EXPECT_EQ(record.output_tokens, 4);
}

TEST(Ppl, ChunkProtocolAndTokenByTokenRun) {
  TestServer server;
  const std::string target = "127.0.0.1:" + std::to_string(server.server().port());
  const std::filesystem::path json = TempPath("ppl.json");
  for (const char* chunk : {"0", "40"}) {
    ASSERT_EQ(RunCommand(RunPplCommand,
                         {"--target", target, "--text-file",
                          testing::DataPath("wikitext-2-raw/wiki.test.raw"), "--max-tokens", "100",
                          "--chunk-protocol", chunk, "--dense", "--json", json.string()}),
              0);
    const nlohmann::json result = nlohmann::json::parse(ReadAll(json));
    EXPECT_EQ(result["tokens"], 100);
    // Token by token scores 99 tokens; chunks of 40 + 40 + 20 score 39 + 39 + 19.
    EXPECT_EQ(result["scored_tokens"], std::string(chunk) == "0" ? 99 : 97);
    EXPECT_GT(result["ppl"].get<double>(), 1.0);
  }
  std::filesystem::remove(json);
}

// The table's Markdown: a header with the seed's columns and one full row per configuration.
void ExpectTableRows(const std::string& markdown, const std::vector<std::string>& names) {
  EXPECT_NE(markdown.find("| Configuration | Wiki PPL | PG19 PPL | Throughput (tok/s) | "
                          "TPOT (ms) | Avg Attn (µs) | Peak Mem (GB) |"),
            std::string::npos)
      << markdown;
  for (const std::string& name : names) {
    const size_t at = markdown.find("| " + name + " |");
    ASSERT_NE(at, std::string::npos) << markdown;
    const std::string line = markdown.substr(at, markdown.find('\n', at) - at);
    EXPECT_EQ(std::count(line.begin(), line.end(), '|'), 8) << line;
    EXPECT_EQ(line.find("| 0.00 |"), std::string::npos) << "an empty column: " << line;
  }
}

std::vector<std::string> TableArgs(const std::filesystem::path& markdown,
                                   const std::filesystem::path& json) {
  return {"--wiki-file",      testing::DataPath("wikitext-2-raw/wiki.test.raw"),
          "--book-file",      testing::DataPath("books/peter-pan.txt"),
          "--ppl-tokens",     "48",
          "--chunk-protocol", "24",
          "--prompt-tokens",  "16",
          "--max-new-tokens", "12",
          "--markdown",       markdown.string(),
          "--json",           json.string()};
}

TEST(Table, RunningAndSpawnedServersGiveEveryColumn) {
  TestServer running;
  const std::filesystem::path markdown = TempPath("table.md"), json = TempPath("table.json");
  std::vector<std::string> args = TableArgs(markdown, json);
  for (const std::string& arg : {std::string("--target"),
                                 "running=127.0.0.1:" + std::to_string(running.server().port()) +
                                     ",metrics=" + std::to_string(running.server().metrics_port()),
                                 std::string("--spawn"),
                                 std::string("spawned=" SINKSERVE_BINARY_DIR
                                             "/server/sinkserve serve --threads 1 --dense")}) {
    args.push_back(arg);
  }
  ASSERT_EQ(RunCommand(RunTableCommand, args), 0);
  ExpectTableRows(ReadAll(markdown), {"running", "spawned"});
  const nlohmann::json rows = nlohmann::json::parse(ReadAll(json))["configurations"];
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["peak_memory_source"], "CPU backend, server not spawned: weights bytes only");
  EXPECT_EQ(rows[1]["peak_memory_source"], "CPU backend: server process peak RSS (VmHWM)");
  // The spawned server is the whole process: more than its weights.
  EXPECT_GT(rows[1]["peak_memory_bytes"].get<double>(), rows[0]["peak_memory_bytes"].get<double>());
  // Streaming (the running server's default) and dense score chunks shorter than sink + window
  // alike, up to the rounding of their different key rotations.
  const double streaming = rows[0]["wiki_ppl"], dense = rows[1]["wiki_ppl"];
  EXPECT_NEAR(streaming / dense, 1.0, 1e-5);
  std::filesystem::remove(markdown);
  std::filesystem::remove(json);
}

// Without --wiki-file/--book-file the table reads the evaluation data directory; when that lacks
// the texts it stops before measuring anything, naming the script that fetches them.
TEST(Table, WithoutTheEvaluationDataNamesTheFetchScript) {
  const testing::TempDir empty;
  const char* previous = std::getenv("SINKSERVE_DATA_DIR");
  const std::string restore = previous != nullptr ? previous : "";
  setenv("SINKSERVE_DATA_DIR", empty.path().c_str(), 1);
  ::testing::internal::CaptureStderr();
  const int exit = RunCommand(RunTableCommand, {"--target", "x=127.0.0.1:1"});
  const std::string error = ::testing::internal::GetCapturedStderr();
  if (previous != nullptr) {
    setenv("SINKSERVE_DATA_DIR", restore.c_str(), 1);
  } else {
    unsetenv("SINKSERVE_DATA_DIR");
  }
  EXPECT_EQ(exit, 1) << error;
  EXPECT_NE(error.find(empty.path() + "/wikitext-2-raw/wiki.test.raw"), std::string::npos) << error;
  EXPECT_NE(error.find("scripts/fetch-data.sh"), std::string::npos) << error;
}

TEST(Load, KillingTheServerMidRunStopsWithAClearErrorAndKeepsPartialResults) {
  const int port = testing::FreePort();
  testing::ChildProcess server(
      {SINKSERVE_BINARY_DIR "/server/sinkserve", "serve", "--threads", "1", "--port",
       std::to_string(port), "--metrics-port", "-1", "--http-port", "-1"},
      TempPath("killed-server.log").string());
  const std::string target = "127.0.0.1:" + std::to_string(port);
  ASSERT_TRUE(testing::WaitFor([&] { return Connect(target, {}, std::chrono::seconds(1)).ok(); },
                               std::chrono::seconds(30)));
  const std::filesystem::path json = TempPath("killed.json");
  std::atomic<int> exit_code{-1};
  const auto start = std::chrono::steady_clock::now();
  std::thread load([&] {
    exit_code = RunCommand(RunLoadCommand, {"--target", target, "--duration", "60", "--concurrency",
                                            "2", "--prompt-tokens", "8", "--max-new-tokens", "16",
                                            "--json", json.string()});
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  server.Signal(SIGKILL);
  load.join();
  EXPECT_EQ(exit_code.load(), 1);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  const nlohmann::json report = nlohmann::json::parse(ReadAll(json));
  EXPECT_GE(report["completed"].get<int>(), 1);  // partial results kept
  EXPECT_NE(report["aborted"].get<std::string>().find("the server became unavailable"),
            std::string::npos)
      << report["aborted"];
  std::filesystem::remove(json);
}

}  // namespace
}  // namespace sinkserve::bench
