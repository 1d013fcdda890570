#include "common/base/file.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace sinkserve {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

}  // namespace sinkserve
