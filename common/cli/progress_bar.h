// A one-line progress bar on stderr for long work, drawn only when stderr is a terminal.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace sinkserve::cli {

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
