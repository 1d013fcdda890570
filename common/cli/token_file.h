// Bearer-token files (--auth-token-file), read the same way by the server and its clients.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace sinkserve::cli {

// The token in `path`: its first line, surrounding whitespace removed. Errors name the file;
// an empty token is refused (it would turn authentication off unnoticed).
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

}  // namespace sinkserve::cli
