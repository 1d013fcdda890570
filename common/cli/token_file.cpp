#include "common/cli/token_file.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/base/file.h"

namespace sinkserve::cli {

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  absl::StatusOr<std::string> contents = ReadFile(path);
  if (!contents.ok()) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot read the auth token file"));
  }
  std::string line = contents->substr(0, contents->find('\n'));
  std::string token(absl::StripAsciiWhitespace(line));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": the auth token file is empty"));
  }
  return token;
}

}  // namespace sinkserve::cli
