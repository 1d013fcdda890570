// sinkserve-bench load: drive a server with Generate streams and report latency percentiles,
// throughput, goodput and errors.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "client/command_common.h"
#include "common/cli/progress_bar.h"
#include "client/commands.h"
#include "client/connection.h"
#include "client/load_generator.h"
#include "client/load_report.h"
#include "client/openai_client.h"
#include "client/prompt_source.h"

namespace sinkserve::bench {

int RunLoadCommand(int argc, char** argv) {
  std::string target = "127.0.0.1:50051", api = "grpc", url, model_name;
  int64_t concurrency = 1, requests = 0, prompt_tokens = 128, max_new_tokens = 128, turns = 1,
          warmup = 1, seed = 0;
  double rate = 0, burstiness = 1, duration_s = 0, temperature = 0, request_timeout_s = 600;
  std::vector<std::string> prompt_files;
  std::string tokenizer_path, slo_text, json_path, csv_path;
  bool stop_at_eos = false;
  cli::CacheFlags cache;
  cli::Flags flags("load",
                   "Sends Generate streams to a sinkserve server, closed loop (--concurrency N "
                   "conversations in flight)\nor open loop (--rate R arrivals per second), and "
                   "reports TTFT, TPOT, ITL and end-to-end latency\n(mean, std, p50, p90, p99; "
                   "measured on the client's clock from the stream), request and token\n"
                   "throughput, goodput and errors by status code. Also shown: the server's own "
                   "timings from each\nfinal message. Stops early (exit 1, partial results "
                   "printed) when the server becomes unavailable.",
                   kProgram);
  flags.Add("target", &target, "server address host:port");
  ClientSecurity security;
  security.AddTo(flags);
  flags.Add("api", &api,
            "grpc (sinkserve's API at --target) or openai (streaming /v1/completions of any "
            "OpenAI-compatible server at --url; bearer token from $OPENAI_API_KEY)");
  flags.Add("url", &url, "--api openai: the server's base URL, e.g. http://127.0.0.1:8000");
  flags.Add("model", &model_name, "--api openai: the model to name; empty = the first of /v1/models");
  flags.Add("concurrency", &concurrency,
            "closed loop: conversations in flight at once (ignored with --rate)");
  flags.Add("rate", &rate,
            "open loop: conversations started per second, whatever the server's speed; 0 = "
            "closed loop");
  flags.Add("burstiness", &burstiness,
            "open loop: shape of the gamma distribution of arrival gaps; 1 = Poisson, < 1 "
            "burstier, > 1 more regular");
  flags.Add("requests", &requests,
            "conversations to run (each --turns requests); 0 = until --duration ends, or 32 "
            "without --duration");
  flags.Add("duration", &duration_s,
            "seconds during which conversations are started; those in flight then finish");
  flags.Add("prompt-file", &prompt_files,
            "text file for the prompts (cut into --prompt-tokens slices); none = random ids");
  flags.Add("prompt-tokens", &prompt_tokens, "tokens per prompt (per turn)");
  flags.Add("max-new-tokens", &max_new_tokens, "tokens generated per request");
  flags.Add("stop-at-eos", &stop_at_eos,
            "let generation stop at end-of-text (default: ignore_eos, so every request "
            "generates exactly --max-new-tokens)");
  flags.Add("turns", &turns,
            "requests per conversation: the first keeps its stream as a session, the next "
            "ones continue it with a new prompt; closed at the end");
  flags.Add("warmup", &warmup, "requests sent one at a time before the measured run (not counted)");
  flags.Add("temperature", &temperature, "sampling temperature; 0 = greedy");
  flags.Add("seed", &seed, "seed of the random prompt ids, sampling seeds and arrival times");
  flags.Add("tokenizer", &tokenizer_path,
            "the served model's tokenizer.json, to cut --prompt-file texts to token counts "
            "(not needed for the demo model or random ids)");
  // Given --sink/--window/--dense set each new stream's cache policy; none = the server's.
  cache.AddTo(flags);
  flags.Add("slo", &slo_text,
            "TTFT_MS,TPOT_MS: also report goodput, the rate of requests meeting both");
  flags.Add("request-timeout-s", &request_timeout_s, "gRPC deadline of each request");
  flags.Add("json", &json_path,
            "write the results as JSON to this file (- = stdout), with the run's date, "
            "target, arguments and the server's GetModelInfo");
  bool save_detailed = false;
  flags.Add("save-detailed", &save_detailed,
            "with --json: also each request's input/output token counts, TTFT, ITLs and error "
            "(vLLM's input_lens, output_lens, ttfts, itls; seconds)");
  flags.Add("csv", &csv_path, "write the results as CSV (header + one row) to this file (- = stdout)");
  if (int exit = cli::ParseFlagsOrExit(flags, argc, argv); exit >= 0) return exit;
  absl::StatusOr<std::optional<Slo>> slo = ParseSlo(slo_text);
  absl::StatusOr<std::optional<v1::CachePolicy>> policy = RequestedPolicy(cache, flags);
  for (const absl::Status& status : {slo.status(), policy.status()}) {
    if (!status.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(status.message()).c_str());
      return cli::kExitUsage;
    }
  }
  if (concurrency < 1 || rate < 0 || burstiness <= 0 || requests < 0 || duration_s < 0 ||
      prompt_tokens < 1 || max_new_tokens < 1 || turns < 1 || warmup < 0) {
    std::fprintf(stderr, "error: --concurrency, --prompt-tokens, --max-new-tokens and --turns "
                         "must be at least 1; --rate, --requests, --duration, --warmup at least "
                         "0; --burstiness above 0\n");
    return cli::kExitUsage;
  }
  if (requests == 0 && duration_s == 0) requests = 32;
  if ((api != "grpc" && api != "openai") || (api == "openai") != !url.empty()) {
    std::fprintf(stderr, "error: --api is grpc or openai, and --url goes with --api openai\n");
    return cli::kExitUsage;
  }

  // gRPC: the server's ModelInfo. OpenAI API: the model id only, and random prompt ids below
  // 256, which every byte-level BPE vocabulary holds.
  std::unique_ptr<OpenAiClient> openai;
  absl::StatusOr<Connection> connection = Connection{};
  if (api == "openai") {
    absl::StatusOr<std::unique_ptr<OpenAiClient>> client = OpenAiClient::Connect(url, model_name);
    if (!client.ok()) return cli::Fail(client.status());
    openai = std::move(*client);
    connection->model.set_model_name(openai->model());
    connection->model.set_backend(absl::StrCat("OpenAI API at ", openai->url()));
    connection->model.set_vocab_size(256);
  } else {
    connection = Connect(target, security);
  }
  if (!connection.ok()) return cli::Fail(connection.status());
  absl::StatusOr<PromptSource> prompts = [&]() -> absl::StatusOr<PromptSource> {
    if (prompt_files.empty()) {
      return PromptSource::Random(connection->model.vocab_size(), static_cast<int>(prompt_tokens),
                                  static_cast<uint64_t>(seed));
    }
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
        LoadTokenizer(tokenizer_path, connection->model);
    if (!tokenizer.ok()) return tokenizer.status();
    return PromptSource::FromFiles(**tokenizer, prompt_files, static_cast<int>(prompt_tokens));
  }();
  if (!prompts.ok()) return cli::Fail(prompts.status());

  LoadOptions options;
  options.concurrency = static_cast<int>(concurrency);
  options.rate = rate;
  options.burstiness = burstiness;
  options.conversations = static_cast<int>(requests);
  options.duration_s = duration_s;
  options.turns = static_cast<int>(turns);
  options.max_new_tokens = static_cast<int>(max_new_tokens);
  options.temperature = temperature;
  options.ignore_eos = !stop_at_eos;
  options.seed = static_cast<uint64_t>(seed);
  options.request_timeout_s = request_timeout_s;
  options.cache_policy = *policy;
  std::fprintf(stderr, "sinkserve-bench: %s serves %s%s (%s); %s, %lld-token prompts, %lld new "
               "tokens, %lld turn(s)\n", openai ? url.c_str() : target.c_str(),
               connection->model.model_name().c_str(),
               connection->model.demo() ? " [DEMO: random weights]" : "",
               connection->model.backend().c_str(),
               rate > 0 ? absl::StrCat("open loop at ", rate, " conversations/s").c_str()
                        : absl::StrCat("closed loop, concurrency ", concurrency).c_str(),
               static_cast<long long>(prompt_tokens), static_cast<long long>(max_new_tokens),
               static_cast<long long>(turns));

  auto run_load = [&](const LoadOptions& load, const ProgressCallback& callback) {
    return openai ? RunLoad(*openai, *prompts, load, callback)
                  : RunLoad(*connection, *prompts, load, callback);
  };
  if (warmup > 0) {
    LoadOptions warm = options;
    warm.rate = 0;
    warm.concurrency = 1;
    warm.conversations = static_cast<int>(warmup);
    warm.duration_s = 0;
    warm.turns = 1;
    const LoadResult warm_result = run_load(warm, nullptr);
    if (!warm_result.aborted.empty()) return cli::Fail(absl::UnavailableError(warm_result.aborted));
  }

  // Requests mode counts finished requests; duration mode counts seconds.
  const bool by_requests = requests > 0;
  cli::ProgressBar progress(by_requests ? "load" : "load (s)",
                            by_requests ? requests * turns : static_cast<int64_t>(duration_s),
                            by_requests ? "req" : "s");
  const LoadResult result = run_load(options, [&](const LoadResult& so_far, double elapsed) {
    progress.Update(by_requests ? static_cast<int64_t>(so_far.records.size())
                                : static_cast<int64_t>(elapsed));
  });
  progress.Finish();

  const LoadReport report = MakeReport(result, *slo);
  std::fputs(FormatTable(report, absl::StrCat("sinkserve-bench load: ", openai ? url : target))
                 .c_str(),
             stdout);
  std::fflush(stdout);  // the report before any error line on stderr
  RunInfo run{UtcDate(), target, {kProgram, "load"}, connection->model};
  run.arguments.insert(run.arguments.end(), argv, argv + argc);
  const std::string json = FormatJson(report, run, save_detailed ? &result : nullptr);
  for (const auto& [path, text] :
       {std::pair{json_path, json}, std::pair{csv_path, FormatCsv(report)}}) {
    if (path.empty()) continue;
    if (absl::Status status = WriteOutput(path, text); !status.ok()) return cli::Fail(status);
  }
  if (!result.aborted.empty()) {
    return cli::Fail(absl::UnavailableError(
        absl::StrCat(result.aborted, "; the results above are partial")));
  }
  return cli::kExitOk;
}

}  // namespace sinkserve::bench
