// The evaluation data (tokenizer.json, WikiText-2, books) that tests and `sinkserve-bench table`
// read: one directory, $SINKSERVE_DATA_DIR, else the data/ folder of the source tree this was
// built from, filled by scripts/fetch-data.sh (data/README.md lists the files).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace sinkserve {

// $SINKSERVE_DATA_DIR when set and non-empty, else <source tree>/data.
std::string DataDir();

// DataDir()/relative when that file exists; else NotFound naming the path, SINKSERVE_DATA_DIR
// and scripts/fetch-data.sh.
absl::StatusOr<std::string> DataFile(const std::string& relative);

}  // namespace sinkserve
