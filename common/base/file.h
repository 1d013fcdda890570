// Reading a whole file: the one way every layer does it.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace sinkserve {

// The file's bytes; NOT_FOUND naming the path when it cannot be opened.
absl::StatusOr<std::string> ReadFile(const std::string& path);

}  // namespace sinkserve
