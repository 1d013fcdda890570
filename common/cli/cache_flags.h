// --sink / --window / --dense: the cache policy a command asks for, shared by the programs that
// run the model and by sinkserve-bench (which sends it in requests).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "common/cli/flags.h"

namespace sinkserve::cli {

struct CacheFlags {
  int64_t sink = 4;
  int64_t window = 256;
  bool dense = false;

  void AddTo(Flags& flags);
  absl::Status Validate() const;  // INVALID_ARGUMENT naming the flag
};

}  // namespace sinkserve::cli
