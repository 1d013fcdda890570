// Soak (label `soak`): mixed load at saturation against a real server on loopback for
// $SINKSERVE_SOAK_SECONDS (default 120; RELIABILITY.md records a 1800 s run). Client threads
// loop over random operations — Generate (some with stop strings), Score, session churn
// (create, turns, close), client cancels mid-stream and short deadlines — while a sampler
// records the process RSS and the server's KV-cache bytes. Checked:
//   * every call ends OK or with a code its operation expects (RESOURCE_EXHAUSTED under the
//     queue limit, CANCELLED / DEADLINE_EXCEEDED for cancels and deadlines, NOT_FOUND for a
//     session evicted by the session limit), never anything else;
//   * every OK stream is complete (a final result counting exactly the tokens sent);
//   * RSS after warm-up stays within a bound of its post-warm-up level (no leak per request);
//   * KV-cache bytes never exceed --max-cache-bytes, and nothing is running or waiting at the end.
// The figures are printed and, with $SINKSERVE_SOAK_REPORT, written there as JSON.
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <random>

#include "nlohmann/json.hpp"
#include "server/status.h"
#include "tests/server/server_test_util.h"
#include "tests/unit/test_util.h"

namespace sinkserve::testing {
namespace {

using Clock = std::chrono::steady_clock;

double EnvSeconds(const char* name, double fallback) {
  const char* value = std::getenv(name);
  return value != nullptr ? std::strtod(value, nullptr) : fallback;
}

uint64_t RssBytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

std::string RandomText(std::mt19937_64& rng, int min_chars, int max_chars) {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz    .,é\xe2\x82\xac";
  std::string text;
  const int n = std::uniform_int_distribution<int>(min_chars, max_chars)(rng);
  while (static_cast<int>(text.size()) < n) {
    const size_t i = std::uniform_int_distribution<size_t>(0, sizeof(kAlphabet) - 2)(rng);
    // Keep multi-byte characters whole: step back to the start of a UTF-8 sequence.
    size_t start = i;
    while (start > 0 && (static_cast<unsigned char>(kAlphabet[start]) & 0xC0) == 0x80) --start;
    size_t end = start + 1;
    while (kAlphabet[end] != 0 && (static_cast<unsigned char>(kAlphabet[end]) & 0xC0) == 0x80) ++end;
    text.append(kAlphabet + start, end - start);
  }
  return text;
}

// Codes seen per operation, and how many streams completed.
class Tally {
 public:
  void Add(const std::string& operation, grpc::StatusCode code) {
    std::lock_guard lock(mutex_);
    ++counts_[operation][code];
  }
  nlohmann::json ToJson() const {
    std::lock_guard lock(mutex_);
    nlohmann::json json;
    for (const auto& [operation, codes] : counts_) {
      for (const auto& [code, count] : codes) {
        json[operation][server::StatusCodeName(code)] = count;
      }
    }
    return json;
  }
  int64_t Total() const {
    std::lock_guard lock(mutex_);
    int64_t total = 0;
    for (const auto& [operation, codes] : counts_) {
      for (const auto& [code, count] : codes) total += count;
    }
    return total;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::map<grpc::StatusCode, int64_t>> counts_;
};

class SoakClient {
 public:
  SoakClient(TestServer& server, Tally& tally, uint64_t seed)
      : stub_(server.NewStub()), tally_(tally), rng_(seed) {}

  void RunOnce() {
    refused_ = false;
    switch (std::uniform_int_distribution<int>(0, 9)(rng_)) {
      case 0: case 1: case 2: GenerateOnce(); break;
      case 3: ScoreOnce(); break;
      case 4: case 5: SessionChurn(); break;
      case 6: case 7: CancelMidStream(); break;
      default: ShortDeadline();
    }
    // A refused client backs off a little before its next call, as a real one would.
    if (refused_) {
      std::this_thread::sleep_for(
          std::chrono::milliseconds(std::uniform_int_distribution<int>(10, 100)(rng_)));
    }
  }

 private:
  void Record(const std::string& operation, grpc::StatusCode code) {
    tally_.Add(operation, code);
    refused_ |= code == grpc::StatusCode::RESOURCE_EXHAUSTED;
  }

  v1::GenerateRequest RandomGenerate() {
    v1::GenerateRequest request;
    request.set_prompt_text(RandomText(rng_, 1, 200));
    request.set_max_new_tokens(std::uniform_int_distribution<uint32_t>(1, 96)(rng_));
    request.mutable_sampling()->set_temperature(std::uniform_real_distribution<float>(0, 1.2f)(rng_));
    request.mutable_sampling()->set_seed(rng_());
    if (rng_() % 4 == 0) request.add_stop_strings(RandomText(rng_, 1, 2));
    return request;
  }

  void Check(const std::string& operation, const GenerateOutput& output,
             std::initializer_list<grpc::StatusCode> expected) {
    Record(operation, output.status.error_code());
    EXPECT_TRUE(output.status.ok() ||
                std::find(expected.begin(), expected.end(), output.status.error_code()) !=
                    expected.end())
        << operation << ": " << output.status.error_code() << " " << output.status.error_message();
    EXPECT_TRUE(StreamComplete(output)) << operation;
  }

  void GenerateOnce() {
    Check("generate", Generate(*stub_, RandomGenerate()), {grpc::StatusCode::RESOURCE_EXHAUSTED});
  }

  void ScoreOnce() {
    grpc::ClientContext context;
    v1::ScoreRequest request;
    request.set_text(RandomText(rng_, 2, 600));
    auto reader = stub_->Score(&context, request);
    v1::ScoreResponse response;
    bool has_result = false;
    while (reader->Read(&response)) has_result |= response.has_result();
    const grpc::Status status = reader->Finish();
    Record("score", status.error_code());
    EXPECT_TRUE(status.ok() || status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED)
        << status.error_message();
    if (status.ok()) {
      EXPECT_TRUE(has_result);
    }
  }

  void SessionChurn() {
    grpc::ClientContext create_context;
    v1::CreateSessionRequest create;
    if (rng_() % 2 == 0) {
      create.mutable_cache_policy()->mutable_streaming()->set_sink_tokens(4);
      create.mutable_cache_policy()->mutable_streaming()->set_window_tokens(
          std::uniform_int_distribution<uint32_t>(16, 128)(rng_));
    }
    v1::Session session;
    const grpc::Status created = stub_->CreateSession(&create_context, create, &session);
    Record("create_session", created.error_code());
    if (!created.ok()) {
      EXPECT_EQ(created.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << created.error_message();
      return;
    }
    const int turns = std::uniform_int_distribution<int>(1, 4)(rng_);
    for (int turn = 0; turn < turns; ++turn) {
      v1::GenerateRequest request = RandomGenerate();
      request.set_session_id(session.session_id());
      const GenerateOutput output = Generate(*stub_, request);
      // NOT_FOUND: the session limit evicted the idle session between turns.
      Check("session_generate", output,
            {grpc::StatusCode::RESOURCE_EXHAUSTED, grpc::StatusCode::NOT_FOUND});
      if (output.status.error_code() == grpc::StatusCode::NOT_FOUND) return;
    }
    if (rng_() % 4 == 0) return;  // left to the TTL / LRU eviction
    grpc::ClientContext close_context;
    v1::CloseSessionRequest close;
    close.set_session_id(session.session_id());
    v1::Session closed;
    const grpc::Status status = stub_->CloseSession(&close_context, close, &closed);
    Record("close_session", status.error_code());
    EXPECT_TRUE(status.ok() || status.error_code() == grpc::StatusCode::NOT_FOUND)
        << status.error_message();
  }

  void CancelMidStream() {
    grpc::ClientContext context;
    v1::GenerateRequest request = RandomGenerate();
    request.set_max_new_tokens(512);
    request.set_ignore_eos(true);
    request.clear_stop_strings();
    auto reader = stub_->Generate(&context, request);
    const int reads = std::uniform_int_distribution<int>(0, 8)(rng_);
    v1::GenerateResponse response;
    GenerateOutput output;
    for (int i = 0; i < reads && reader->Read(&response); ++i) {
      output.token_ids.insert(output.token_ids.end(), response.token_ids().begin(),
                              response.token_ids().end());
      output.has_result |= response.has_result();
    }
    context.TryCancel();
    while (reader->Read(&response)) {
    }
    output.status = reader->Finish();
    Check("cancel", output, {grpc::StatusCode::CANCELLED, grpc::StatusCode::RESOURCE_EXHAUSTED});
  }

  void ShortDeadline() {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(std::uniform_int_distribution<int>(5, 300)(rng_)));
    v1::GenerateRequest request = RandomGenerate();
    request.set_max_new_tokens(256);
    Check("deadline", Generate(*stub_, request, &context),
          {grpc::StatusCode::DEADLINE_EXCEEDED, grpc::StatusCode::RESOURCE_EXHAUSTED});
  }

  std::unique_ptr<v1::Sinkserve::Stub> stub_;
  Tally& tally_;
  std::mt19937_64 rng_;
  bool refused_ = false;  // the last operation met RESOURCE_EXHAUSTED
};

TEST(SoakTest, MixedLoadAtSaturation) {
  const double seconds = EnvSeconds("SINKSERVE_SOAK_SECONDS", 120);
  const double warmup_seconds = std::min(60.0, seconds / 4);
  const uint64_t seed = TestSeed();
  std::printf("soak: %.0f s (warm-up %.0f s), seed %llu\n", seconds, warmup_seconds,
              static_cast<unsigned long long>(seed));

  server::ServerOptions options = TestServerOptions();
  options.scheduler.max_batch = 4;
  options.scheduler.max_queue = 4;  // 12 clients against 4 slots + 4 queue places: saturated
  options.scheduler.session_limits.max_sessions = 8;
  options.scheduler.session_limits.ttl = std::chrono::seconds(2);
  options.scheduler.session_limits.max_cache_bytes = uint64_t{64} << 20;
  TestServer server(options);
  const int metrics_port = server.server().metrics_port();

  Tally tally;
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  constexpr int kClients = 12;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      SoakClient client(server, tally, seed + i);
      while (!stop) client.RunOnce();
    });
  }

  struct Sample {
    double t;
    uint64_t rss;
    double kv_bytes;
  };
  std::vector<Sample> samples;
  const auto start = Clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
  while (elapsed() < seconds) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const double kv = MetricValue(HttpGet(metrics_port, "/metrics"),
                                  "sinkserve_kv_cache_bytes{model_name=\"demo\",state=\"active\"}");
    samples.push_back({elapsed(), RssBytes(), kv});
    EXPECT_LE(kv, static_cast<double>(options.scheduler.session_limits.max_cache_bytes));
  }
  stop = true;
  for (std::thread& client : clients) client.join();

  // Idle: nothing running or waiting; the idle sessions left behind expire with the TTL.
  EXPECT_TRUE(WaitFor([&] {
    const std::string metrics = HttpGet(metrics_port, "/metrics");
    return MetricValue(metrics, "sinkserve_num_requests_running{model_name=\"demo\"}") == 0 &&
           MetricValue(metrics, "sinkserve_num_requests_waiting{model_name=\"demo\"}") == 0 &&
           MetricValue(metrics, "sinkserve_sessions_active{model_name=\"demo\"}") == 0 &&
           MetricValue(metrics, "sinkserve_kv_cache_bytes{model_name=\"demo\",state=\"active\"}") == 0;
  }, std::chrono::seconds(15)));

  // RSS: the maximum of the first minute after warm-up against the maximum of the last minute.
  uint64_t warm = 0, last = 0, peak = 0;
  double kv_peak = 0;
  for (const Sample& sample : samples) {
    peak = std::max(peak, sample.rss);
    kv_peak = std::max(kv_peak, sample.kv_bytes);
    if (sample.t >= warmup_seconds && sample.t < warmup_seconds + 60) warm = std::max(warm, sample.rss);
    if (sample.t >= seconds - 60 && sample.t >= warmup_seconds + 60) last = std::max(last, sample.rss);
  }
  if (last == 0) last = samples.empty() ? 0 : samples.back().rss;
  const double growth_mib = (static_cast<double>(last) - static_cast<double>(warm)) / (1 << 20);
  // Allocator noise (gRPC arenas, glibc's per-thread caches) stays within a few MiB; a leak of
  // even one KiB per request would show as tens of MiB over the run.
  EXPECT_LT(growth_mib, 16.0) << "RSS after warm-up " << warm << " → " << last;

  nlohmann::json report = {
      {"seconds", seconds},
      {"seed", seed},
      {"clients", kClients},
      {"calls", tally.Total()},
      {"codes", tally.ToJson()},
      {"rss_after_warmup_mib", static_cast<double>(warm) / (1 << 20)},
      {"rss_last_minute_mib", static_cast<double>(last) / (1 << 20)},
      {"rss_peak_mib", static_cast<double>(peak) / (1 << 20)},
      {"rss_growth_mib", growth_mib},
      {"kv_cache_peak_bytes", kv_peak},
      {"kv_cache_limit_bytes", options.scheduler.session_limits.max_cache_bytes},
  };
  std::printf("soak report: %s\n", report.dump().c_str());
  if (const char* path = std::getenv("SINKSERVE_SOAK_REPORT")) {
    std::ofstream(path) << report.dump(2) << "\n";
    std::ofstream samples_file(std::string(path) + ".csv");
    samples_file << "t_s,rss_bytes,kv_cache_bytes\n";
    for (const Sample& sample : samples) {
      samples_file << sample.t << "," << sample.rss << "," << sample.kv_bytes << "\n";
    }
  }
}

}  // namespace
}  // namespace sinkserve::testing
