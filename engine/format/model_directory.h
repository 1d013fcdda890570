// Where a model's files are: a Hugging Face model directory as given, or the snapshot a Hugging
// Face hub cache folder points to.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace sinkserve {

struct ModelDirectory {
  std::string path;  // the directory that holds config.json, the weights and tokenizer.json
  std::string name;  // the model's name: NAME of a cache folder models--ORG--NAME, else the
                     // directory's own name
  bool hub_cache = false;  // path is a snapshot in a Hugging Face hub cache (do not write there)
};

// PATH as given, unless it is a Hugging Face hub cache folder (`models--ORG--NAME`, holding
// refs/main and snapshots/REVISION/, whose files are symlinks into ../../blobs/): then the
// snapshot refs/main names, else its only snapshot. NOT_FOUND when refs/main names a snapshot
// that is not there or there is none; INVALID_ARGUMENT, listing them, when there are several
// and no refs/main. A snapshot directory given directly is used as it is, named NAME too.
absl::StatusOr<ModelDirectory> ResolveModelDirectory(const std::string& path);

}  // namespace sinkserve
