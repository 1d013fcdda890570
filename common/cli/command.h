// How a command-line subcommand starts and ends: flag parsing with --help, exit codes, errors.
#pragma once

#include "absl/status/status.h"
#include "common/cli/flags.h"

namespace sinkserve::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;

// Parses flags; prints usage (exit 0) for --help or the error (exit 2). Returns -1 to go on.
int ParseFlagsOrExit(Flags& flags, int argc, char** argv);

// Prints "error: <message>" to stderr and returns kExitError.
int Fail(const absl::Status& status);

}  // namespace sinkserve::cli
