#include "engine/serving/stop_matcher.h"

#include <algorithm>

namespace sinkserve {

StopStringMatcher::StopStringMatcher(std::vector<std::string> stop_strings)
    : stop_strings_(std::move(stop_strings)) {}

StopStringMatcher::Result StopStringMatcher::Push(std::string_view text) {
  Result result;
  if (stopped_) return result;
  pending_.append(text);
  if (stop_strings_.empty()) {
    result.text.swap(pending_);
    return result;
  }
  // The earliest complete stop string wins (the first listed on a tie).
  size_t best = std::string::npos;
  for (const std::string& stop : stop_strings_) {
    const size_t at = pending_.find(stop);
    if (at < best) {
      best = at;
      result.matched = stop;
    }
  }
  if (best != std::string::npos) {
    stopped_ = true;
    result.stopped = true;
    result.text = pending_.substr(0, best);
    pending_.clear();
    return result;
  }
  // Hold back the longest suffix that is a proper prefix of a stop string. Nothing before it can
  // start a stop string any more (it would have been found above or be a longer such suffix).
  // Stop strings are valid UTF-8, so the suffix starts at a character boundary.
  size_t hold = 0;
  for (const std::string& stop : stop_strings_) {
    for (size_t length = std::min(stop.size() - 1, pending_.size()); length > hold; --length) {
      if (std::string_view(pending_).substr(pending_.size() - length) ==
          std::string_view(stop).substr(0, length)) {
        hold = length;
        break;
      }
    }
  }
  result.text = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return result;
}

std::string StopStringMatcher::Flush() {
  std::string rest;
  rest.swap(pending_);
  return rest;
}

}  // namespace sinkserve
