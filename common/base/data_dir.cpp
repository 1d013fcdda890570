#include "common/base/data_dir.h"

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace sinkserve {

std::string DataDir() {
  const char* dir = std::getenv("SINKSERVE_DATA_DIR");
  if (dir != nullptr && *dir != '\0') return dir;
  return SINKSERVE_SOURCE_DATA_DIR;
}

absl::StatusOr<std::string> DataFile(const std::string& relative) {
  const std::string path = DataDir() + "/" + relative;
  if (std::filesystem::is_regular_file(path)) return path;
  return absl::NotFoundError(absl::StrCat(
      "evaluation data file ", path, " not found: run scripts/fetch-data.sh (it downloads into ",
      SINKSERVE_SOURCE_DATA_DIR, "), or set SINKSERVE_DATA_DIR to a directory that has ",
      relative));
}

}  // namespace sinkserve
