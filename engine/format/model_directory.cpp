// ResolveModelDirectory (see model_directory.h).
#include "engine/format/model_directory.h"

#include <algorithm>
#include <filesystem>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/file.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "engine/format/mapped_file.h"

namespace sinkserve {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kCachePrefix = "models--";

// NAME of "models--ORG--NAME" (or "models--NAME"); empty when FOLDER is not so named.
std::string CacheModelName(const std::string& folder) {
  if (!folder.starts_with(kCachePrefix)) return "";
  return folder.substr(folder.rfind("--") + 2);
}

}  // namespace

absl::StatusOr<ModelDirectory> ResolveModelDirectory(const std::string& path) {
  std::error_code ec;
  fs::path dir = fs::absolute(path, ec).lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();  // "dir/"
  ModelDirectory out{path, dir.filename().string()};
  const fs::path snapshots = dir / "snapshots";
  if (fs::exists(dir / "config.json", ec) || !fs::is_directory(snapshots, ec)) {
    // A plain model directory, or a snapshot: .../models--ORG--NAME/snapshots/REVISION.
    if (dir.parent_path().filename() == "snapshots") {
      const std::string name = CacheModelName(dir.parent_path().parent_path().filename().string());
      if (!name.empty()) out.name = name;
      out.hub_cache = !name.empty();
    }
    return out;
  }

  if (const std::string name = CacheModelName(out.name); !name.empty()) out.name = name;
  out.hub_cache = true;
  const fs::path ref = dir / "refs" / "main";
  if (fs::exists(ref, ec)) {
    absl::StatusOr<std::string> revision = ReadFile(ref.string(), {.max_bytes = 4096, .regular_file_only = true});
    if (!revision.ok()) return revision.status();
    const std::string rev(absl::StripAsciiWhitespace(*revision));
    const fs::path snapshot = snapshots / rev;
    if (rev.empty() || rev.find('/') != std::string::npos || rev == "." || rev == ".." ||
        !fs::is_directory(snapshot, ec)) {
      return absl::NotFoundError(absl::StrCat(
          ref.string(), " names revision '", rev, "', but ", snapshot.string(),
          " is not a directory: the download is incomplete (fetch the model again)"));
    }
    out.path = snapshot.string();
    return out;
  }
  std::vector<std::string> revisions;
  for (const fs::directory_entry& entry : fs::directory_iterator(snapshots, ec)) {
    if (entry.is_directory(ec)) revisions.push_back(entry.path().filename().string());
  }
  std::sort(revisions.begin(), revisions.end());
  if (revisions.empty()) {
    return absl::NotFoundError(absl::StrCat(path, " is a Hugging Face cache folder with no "
                                            "snapshot in snapshots/: the download is incomplete"));
  }
  if (revisions.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is a Hugging Face cache folder with ", revisions.size(),
        " snapshots and no refs/main to choose one: pass one of ",
        absl::StrJoin(revisions, ", ",
                      [&](std::string* text, const std::string& revision) {
                        absl::StrAppend(text, (snapshots / revision).string());
                      })));
  }
  out.path = (snapshots / revisions.front()).string();
  return out;
}

}  // namespace sinkserve
