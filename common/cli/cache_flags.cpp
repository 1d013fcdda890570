#include "common/cli/cache_flags.h"

#include "absl/strings/str_cat.h"

namespace sinkserve::cli {

void CacheFlags::AddTo(Flags& flags) {
  flags.Add("sink", &sink, "streaming cache: attention-sink tokens kept forever");
  flags.Add("window", &window, "streaming cache: most recent tokens kept");
  flags.Add("dense", &dense, "dense cache instead (no eviction, bounded by the model context)");
}

absl::Status CacheFlags::Validate() const {
  if (dense) return absl::OkStatus();
  if (sink < 0 || sink > (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("--sink must be in [0, 1048576], got ", sink));
  }
  if (window < 1 || window > (1 << 22)) {
    return absl::InvalidArgumentError(absl::StrCat("--window must be in [1, 4194304], got ", window));
  }
  return absl::OkStatus();
}

}  // namespace sinkserve::cli
