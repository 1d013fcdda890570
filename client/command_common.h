// Pieces the sinkserve-bench subcommands share: output files, cache-policy flags, the SLO.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "client/load_report.h"
#include "common/cli/cache_flags.h"
#include "common/cli/command.h"
#include "sinkserve/v1/sinkserve.pb.h"

namespace sinkserve::bench {

inline constexpr char kProgram[] = "sinkserve-bench";

// Writes `text` to `path` ("-" = stdout).
absl::Status WriteOutput(const std::string& path, const std::string& text);

// The cache policy the --sink/--window/--dense flags ask for, or nullopt when none of them was
// given (the server's default policy applies).
absl::StatusOr<std::optional<v1::CachePolicy>> RequestedPolicy(const cli::CacheFlags& cache,
                                                               const cli::Flags& flags);

// "--slo 500,50" -> {ttft_ms 500, tpot_ms 50}; "" -> nullopt.
absl::StatusOr<std::optional<Slo>> ParseSlo(const std::string& text);

}  // namespace sinkserve::bench
