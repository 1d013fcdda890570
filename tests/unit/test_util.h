// Shared helpers for the tests: temporary directories, fresh random data, fixture paths.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/base/data_dir.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

// Defined in sanitizer builds (build-asan, build-tsan), whose runtimes hold freed memory in
// quarantine, reserve terabytes of shadow address space and die on exhaustion instead of
// throwing std::bad_alloc: the few checks of process memory run in the plain build only.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SINKSERVE_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SINKSERVE_SANITIZED 1
#endif
#endif

namespace sinkserve::testing {

// $SINKSERVE_FIXTURES overrides the build's path (test binaries copied to a GPU machine).
inline std::string FixturePath(const std::string& relative) {
  const char* root = std::getenv("SINKSERVE_FIXTURES");
  return std::string(root != nullptr ? root : SINKSERVE_FIXTURES) + "/" + relative;
}
// The fixture checkpoints listed in tests/fixtures/models/manifest.json.
inline std::vector<std::string> FixtureModelNames() {
  std::ifstream file(FixturePath("models/manifest.json"));
  const nlohmann::json manifest = nlohmann::json::parse(file);
  std::vector<std::string> names;
  for (const nlohmann::json& model : manifest["models"]) {
    names.push_back(model["name"]);
  }
  return names;
}

// The evaluation data file `relative` (client/data_dir.h: $SINKSERVE_DATA_DIR, else the repo's
// data/). A missing file fails the test with the message naming scripts/fetch-data.sh.
inline std::string DataPath(const std::string& relative) {
  absl::StatusOr<std::string> path = DataFile(relative);
  if (path.ok()) return *path;
  ADD_FAILURE() << path.status().message();
  return DataDir() + "/" + relative;
}

// A fresh directory under $TMPDIR, removed with its contents at destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "sinkserve-test-XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

inline std::string ReadTextFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// A seed that differs per run (fresh inputs every time), printed by the tests that use it so a
// failure can be reproduced with SINKSERVE_TEST_SEED.
inline uint64_t TestSeed() {
  if (const char* fixed = std::getenv("SINKSERVE_TEST_SEED")) return std::strtoull(fixed, nullptr, 10);
  return std::random_device{}();
}

inline std::vector<float> RandomFloats(std::mt19937_64& rng, size_t n, float stddev = 1.0f) {
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> values(n);
  for (float& value : values) value = normal(rng);
  return values;
}

}  // namespace sinkserve::testing
