// StopStringMatcher: finds stop strings in a stream of generated text and holds back text that
// may be the start of one, so a streamed response never shows part of a stop string and the
// stop string itself is never returned (the convention of OpenAI / vLLM `stop`).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace sinkserve {

class StopStringMatcher {
 public:
  // `stop_strings`: non-empty, valid UTF-8 (the caller validates).
  explicit StopStringMatcher(std::vector<std::string> stop_strings);

  struct Result {
    std::string text;      // text safe to emit now
    bool stopped = false;  // a stop string completed: `text` is everything before it
    std::string matched;   // the stop string, when stopped
  };
  // Appends `text` (valid UTF-8). Once stopped, the matcher stays stopped and returns nothing.
  Result Push(std::string_view text);
  // The text held back because it might have started a stop string (end of the stream).
  std::string Flush();

 private:
  std::vector<std::string> stop_strings_;
  std::string pending_;  // unreturned text: a suffix that is a proper prefix of a stop string
  bool stopped_ = false;
};

}  // namespace sinkserve
