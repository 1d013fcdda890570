// session_store_bench: what surviving costs (issue 18). An in-process server on loopback with
// --session-store DIR and room for one session; a streaming session (default policy, window
// full) is spilled and restored between turns. Reports, for the same run:
//   - save and restore throughput of the session's cache (the server's own
//     sinkserve_session_save_seconds / _restore_seconds: cache copy, encode, write + fsync +
//     rename / lease, read, checksums, rebuild);
//   - the TTFT of a turn on the session in memory (warm) against one that first restores it.
// Pythia-160m shape: deploy/bench/random_pythia_checkpoint.py makes a checkpoint.
//   session_store_bench --model DIR [--store DIR] [--threads N] [--rounds R]
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/serving/directory_session_store.h"
#include "engine/serving/session_file.h"
#include "server/logging.h"
#include "server/server.h"
#include "sinkserve/v1/sinkserve.grpc.pb.h"
#include "tests/server/server_test_util.h"

namespace {

using namespace sinkserve;

struct Args {
  std::string model = "demo";
  std::string store = "/tmp/sinkserve-session-store-bench";
  int threads = 0;
  int rounds = 10;
};

Args ParseArgs(int argc, char** argv) {
  Args args;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--model")) args.model = argv[i + 1];
    if (!std::strcmp(argv[i], "--store")) args.store = argv[i + 1];
    if (!std::strcmp(argv[i], "--threads")) args.threads = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--rounds")) args.rounds = std::atoi(argv[i + 1]);
  }
  return args;
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The store's parts on one real session file, `rounds` times each (medians, seconds): write
// with and without fsync, read, parse (checksums).
struct StoreParts {
  double write_sync = 0, write_nosync = 0, read = 0, parse = 0;
};
StoreParts MeasureStore(const std::string& dir, const std::string& id, int rounds) {
  auto synced = DirectorySessionStore::Open(dir, true);
  auto unsynced = DirectorySessionStore::Open(dir, false);
  const std::vector<std::byte> file = *(*synced)->Load(id);
  std::vector<double> write_sync, write_nosync, read, parse;
  for (int i = 0; i < rounds; ++i) {
    auto start = std::chrono::steady_clock::now();
    if (!(*synced)->Save("bench", file, {}).ok()) std::exit(1);
    write_sync.push_back(SecondsSince(start));
    start = std::chrono::steady_clock::now();
    if (!(*unsynced)->Save("bench", file, {}).ok()) std::exit(1);
    write_nosync.push_back(SecondsSince(start));
    start = std::chrono::steady_clock::now();
    const std::vector<std::byte> loaded = *(*synced)->Load("bench");
    read.push_back(SecondsSince(start));
    start = std::chrono::steady_clock::now();
    if (!ParseSessionFile(loaded).ok()) std::exit(1);
    parse.push_back(SecondsSince(start));
  }
  (void)(*synced)->Remove("bench");
  return {Median(write_sync), Median(write_nosync), Median(read), Median(parse)};
}

double Ttft(v1::Sinkserve::Stub& stub, const std::string& session, int prompt_tokens) {
  v1::GenerateRequest request;
  request.set_session_id(session);
  for (int t = 0; t < prompt_tokens; ++t) request.add_prompt_token_ids(100 + t);
  request.mutable_sampling()->set_temperature(0);
  request.set_max_new_tokens(4);
  request.set_ignore_eos(true);
  sinkserve::testing::GenerateOutput output = sinkserve::testing::Generate(stub, request);
  if (!output.status.ok()) {
    std::fprintf(stderr, "error: %s\n", output.status.error_message().c_str());
    std::exit(1);
  }
  return output.result.time_to_first_token_ms();
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = ParseArgs(argc, argv);
  (void)server::ConfigureLogging("warn", "text");
  std::filesystem::remove_all(args.store);
  server::ServerOptions options;
  options.host = "127.0.0.1";
  options.port = 0;
  options.metrics_port = 0;
  options.model.path = args.model;
  options.model.threads = args.threads;
  options.scheduler.session_limits.max_sessions = 1;
  options.session_store_dir = args.store;
  server::Server server(options);
  if (absl::Status status = server.Start(); !status.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  auto stub = v1::Sinkserve::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(server.port()), grpc::InsecureChannelCredentials()));
  auto create = [&] {
    grpc::ClientContext context;
    v1::Session session;
    if (!stub->CreateSession(&context, v1::CreateSessionRequest(), &session).ok()) std::exit(1);
    return session.session_id();
  };
  const std::string session = create();
  Ttft(*stub, session, 300);  // fills the window (sink 4 + window 256)
  auto close = [&](const std::string& id) {
    grpc::ClientContext context;
    v1::CloseSessionRequest request;
    request.set_session_id(id);
    v1::Session closed;
    if (!stub->CloseSession(&context, request, &closed).ok()) std::exit(1);
  };
  // Restored with memory free (the session that evicted it was closed), and restored while
  // another session must be spilled to make room for it (its fsync'ed write included).
  std::vector<double> warm, restored, restored_evicting;
  for (int round = 0; round < args.rounds; ++round) {
    warm.push_back(Ttft(*stub, session, 16));
    close(create());  // spills the session, then frees the memory again
    restored.push_back(Ttft(*stub, session, 16));
    create();  // spills the session; restoring it spills this one
    restored_evicting.push_back(Ttft(*stub, session, 16));
  }
  const std::string metrics = sinkserve::testing::HttpGet(server.metrics_port(), "/metrics");
  const double bytes = sinkserve::testing::MetricValue(metrics, "sinkserve_session_store_bytes") /
                       std::max(1.0, sinkserve::testing::MetricValue(metrics, "sinkserve_session_store_sessions"));
  const double saves = sinkserve::testing::MetricValue(metrics, "sinkserve_session_save_seconds_count");
  const double save_s = sinkserve::testing::MetricValue(metrics, "sinkserve_session_save_seconds_sum") / saves;
  const double restores = sinkserve::testing::MetricValue(metrics, "sinkserve_session_restore_seconds_count");
  const double restore_s =
      sinkserve::testing::MetricValue(metrics, "sinkserve_session_restore_seconds_sum") / restores;
  std::printf("session_store_bench: %s, store %s, %d rounds\n\n", args.model.c_str(),
              args.store.c_str(), args.rounds);
  std::printf("| what | value |\n| --- | ---: |\n");
  std::printf("| session file | %.1f MB |\n", bytes / 1e6);
  std::printf("| save (mean of %.0f, fsync'ed) | %.2f ms = %.2f GB/s |\n", saves, save_s * 1e3,
              bytes / save_s / 1e9);
  std::printf("| restore (mean of %.0f) | %.2f ms = %.2f GB/s |\n", restores, restore_s * 1e3,
              bytes / restore_s / 1e9);
  std::printf("| TTFT warm (median, 16-token prompt) | %.2f ms |\n", Median(warm));
  std::printf("| TTFT restored, memory free (median) | %.2f ms = %.2fx warm |\n",
              Median(restored), Median(restored) / Median(warm));
  std::printf("| TTFT restored, spilling another session (median) | %.2f ms = %.2fx warm |\n",
              Median(restored_evicting), Median(restored_evicting) / Median(warm));
  // The parts, on the file of the session now in the store.
  std::string stored;
  for (const auto& entry : std::filesystem::directory_iterator(args.store)) {
    if (entry.path().extension() == ".session") stored = entry.path().stem().string();
  }
  const StoreParts parts = MeasureStore(args.store, stored, args.rounds);
  auto row = [&](const char* what, double seconds) {
    std::printf("| %s (median of %d) | %.2f ms = %.2f GB/s |\n", what, args.rounds,
                seconds * 1e3, bytes / seconds / 1e9);
  };
  row("store write, fsync'ed", parts.write_sync);
  row("store write, page cache (no fsync)", parts.write_nosync);
  row("store read", parts.read);
  row("parse + CRC-32C of every section", parts.parse);
  server.Drain(std::chrono::milliseconds(0));
  std::filesystem::remove_all(args.store);
  return 0;
}
