// server_bench: continuous batching through the whole server. An in-process sinkserve server on
// loopback (demo model, or --model DIR), N concurrent greedy Generate streams over real gRPC,
// for N = 1, 2, 4, 8, 16: aggregate tokens/s, mean TTFT and TPOT as the server measured them,
// rows per batched step. Prints a Markdown table.
//   server_bench [--model DIR] [--threads N] [--tokens T] [--prompt-tokens P]
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "server/logging.h"
#include "server/server.h"
#include "sinkserve/v1/sinkserve.grpc.pb.h"

namespace {

using namespace sinkserve;

struct Args {
  std::string model = "demo";
  int threads = 0;
  int tokens = 128;
  int prompt_tokens = 64;
};

Args ParseArgs(int argc, char** argv) {
  Args args;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--model")) args.model = argv[i + 1];
    if (!std::strcmp(argv[i], "--threads")) args.threads = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--tokens")) args.tokens = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--prompt-tokens")) args.prompt_tokens = std::atoi(argv[i + 1]);
  }
  return args;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = ParseArgs(argc, argv);
  (void)server::ConfigureLogging("warn", "text");
  server::ServerOptions options;
  options.host = "127.0.0.1";
  options.port = 0;
  options.metrics_port = -1;
  options.model.path = args.model;
  options.model.threads = args.threads;
  options.scheduler.max_batch = 16;
  server::Server server(options);
  if (absl::Status status = server.Start(); !status.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  const std::string address = "127.0.0.1:" + std::to_string(server.port());
  std::printf("server_bench: %s, %s; %d prompt + %d generated tokens per stream, greedy\n\n",
              args.model.c_str(), "gRPC on loopback", args.prompt_tokens, args.tokens);
  std::printf("| streams | aggregate tok/s | per-stream tok/s | mean TTFT (ms) | mean TPOT (ms) | rows/step |\n");
  std::printf("| ---: | ---: | ---: | ---: | ---: | ---: |\n");
  for (int streams : {1, 2, 4, 8, 16}) {
    const SchedulerStats before = server.scheduler()->stats();
    std::vector<v1::GenerateResult> results(streams);
    std::vector<std::thread> threads;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < streams; ++i) {
      threads.emplace_back([&, i] {
        grpc::ChannelArguments channel_args;
        channel_args.SetInt("grpc.use_local_subchannel_pool", 1);
        auto stub = v1::Sinkserve::NewStub(
            grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), channel_args));
        v1::GenerateRequest request;
        for (int t = 0; t < args.prompt_tokens; ++t) {
          request.add_prompt_token_ids(static_cast<uint32_t>(32 + (t * 7 + i * 13) % 90));
        }
        request.mutable_sampling()->set_temperature(0);
        request.set_max_new_tokens(static_cast<uint32_t>(args.tokens));
        request.set_ignore_eos(true);
        grpc::ClientContext context;
        auto reader = stub->Generate(&context, request);
        v1::GenerateResponse response;
        while (reader->Read(&response)) {
          if (response.has_result()) results[i] = response.result();
        }
        if (!reader->Finish().ok()) std::fprintf(stderr, "stream %d failed\n", i);
      });
    }
    for (std::thread& thread : threads) thread.join();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const SchedulerStats after = server.scheduler()->stats();
    double ttft = 0, tpot = 0;
    for (const v1::GenerateResult& result : results) {
      ttft += result.time_to_first_token_ms();
      tpot += result.time_per_output_token_ms();
    }
    const double total_tokens = static_cast<double>(streams) * args.tokens;
    std::printf("| %d | %.0f | %.1f | %.1f | %.2f | %.2f |\n", streams, total_tokens / seconds,
                args.tokens / seconds, ttft / streams, tpot / streams,
                static_cast<double>(after.batch_rows - before.batch_rows) /
                    static_cast<double>(after.batch_calls - before.batch_calls));
  }
  server.Drain(std::chrono::milliseconds(1000));
  return 0;
}
