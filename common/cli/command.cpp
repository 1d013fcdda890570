#include "common/cli/command.h"

#include <cstdio>
#include <string>

namespace sinkserve::cli {

int ParseFlagsOrExit(Flags& flags, int argc, char** argv) {
  if (absl::Status status = flags.Parse(argc, argv, 0); !status.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(status.message()).c_str());
    return kExitUsage;
  }
  if (flags.help_requested()) {
    std::fputs(flags.Usage().c_str(), stdout);
    return kExitOk;
  }
  return -1;
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "error: %s\n", std::string(status.message()).c_str());
  return kExitError;
}

}  // namespace sinkserve::cli
