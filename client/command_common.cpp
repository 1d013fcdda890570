#include "client/command_common.h"

#include <cstdio>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace sinkserve::bench {

absl::Status WriteOutput(const std::string& path, const std::string& text) {
  if (path == "-") {
    std::fputs(text.c_str(), stdout);
    std::fflush(stdout);
    return absl::OkStatus();
  }
  std::ofstream file(path, std::ios::binary);
  file << text;
  if (!file) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::StatusOr<std::optional<v1::CachePolicy>> RequestedPolicy(const cli::CacheFlags& cache,
                                                               const cli::Flags& flags) {
  if (!flags.was_set("sink") && !flags.was_set("window") && !flags.was_set("dense")) {
    return std::nullopt;
  }
  if (absl::Status status = cache.Validate(); !status.ok()) return status;
  v1::CachePolicy request;
  if (cache.dense) {
    request.mutable_dense();  // capacity 0: the model's context
  } else {
    request.mutable_streaming()->set_sink_tokens(static_cast<uint32_t>(cache.sink));
    request.mutable_streaming()->set_window_tokens(static_cast<uint32_t>(cache.window));
  }
  return request;
}

absl::StatusOr<std::optional<Slo>> ParseSlo(const std::string& text) {
  if (text.empty()) return std::nullopt;
  std::vector<std::string> parts = absl::StrSplit(text, ',');
  Slo slo;
  if (parts.size() != 2 || !absl::SimpleAtod(parts[0], &slo.ttft_ms) ||
      !absl::SimpleAtod(parts[1], &slo.tpot_ms) || slo.ttft_ms <= 0 || slo.tpot_ms <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--slo expects TTFT_MS,TPOT_MS (two positive numbers), got \"", text, "\""));
  }
  return slo;
}

}  // namespace sinkserve::bench
