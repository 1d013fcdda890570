// Helpers shared by the CLI subcommands: model loading with a clear banner, file reading,
// error printing and a progress bar for long work.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "server/cli/flags.h"

namespace sinkserve::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;

// Parses flags; prints usage (exit 0) for --help or the error (exit 2). Returns -1 to go on.
int ParseFlagsOrExit(Flags& flags, int argc, char** argv);

// Prints "error: <message>" to stderr and returns kExitError.
int Fail(const absl::Status& status);


// Loads a model, telling stderr what is loaded (and loudly when it is the random demo model):
// its weight format, weights_bytes and the peak RSS so far. Shows the load-time conversion's
// progress on a terminal.
absl::StatusOr<std::unique_ptr<Model>> LoadModel(ModelOptions options);

// The process's peak resident set size so far (getrusage ru_maxrss), in bytes.
uint64_t PeakRssBytes();

absl::StatusOr<std::string> ReadFile(const std::string& path);

// The token in `path`: its first line, surrounding whitespace removed. Errors name the file;
// an empty token is refused (it would turn authentication off unnoticed).
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// Whitespace-separated integers ("1 2 3\n4"), INVALID_ARGUMENT naming the bad entry.
absl::StatusOr<std::vector<int32_t>> ParseTokenIds(const std::string& text,
                                                   const std::string& source);

// --model / --threads / --backend / --quant / --double-quant / --quantize-embeddings: which
// model the commands load and how they run it.
struct ModelFlags {
  std::string path = "demo";
  int64_t threads = 0;
  std::string backend = "auto";
  std::string quant;  // empty: as stored
  bool double_quant = false;
  bool quantize_embeddings = false;
  bool cuda_graphs = true;
  bool cuda_programmatic_launch = false;

  void AddTo(Flags& flags);
  absl::StatusOr<ModelOptions> ToOptions() const;  // INVALID_ARGUMENT naming the flag
};

// --sink / --window / --dense, shared by the commands that run the model.
struct CacheFlags {
  int64_t sink = 4;
  int64_t window = 256;
  bool dense = false;

  void AddTo(Flags& flags);
  absl::StatusOr<CachePolicy> ToPolicy() const;  // INVALID_ARGUMENT naming the flag
};

// A one-line progress bar on stderr, drawn only when stderr is a terminal.
class ProgressBar {
 public:
  // `unit` names what is counted, for the rate ("tok" → "12.5 tok/s").
  ProgressBar(std::string label, int64_t total, std::string unit = "tok");
  void Update(int64_t done);
  void Finish();

 private:
  std::string label_;
  int64_t total_;
  std::string unit_;
  bool enabled_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace sinkserve::cli
