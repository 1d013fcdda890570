#include "engine/serving/stop_matcher.h"

#include <gtest/gtest.h>

namespace sinkserve {
namespace {

// Feeds `pieces` and returns everything emitted (plus the flush when it did not stop).
std::pair<std::string, bool> Match(std::vector<std::string> stops, std::vector<std::string> pieces) {
  StopStringMatcher matcher(std::move(stops));
  std::string text;
  for (const std::string& piece : pieces) {
    StopStringMatcher::Result result = matcher.Push(piece);
    text += result.text;
    if (result.stopped) return {text, true};
  }
  return {text + matcher.Flush(), false};
}

TEST(StopMatcherTest, StopsBeforeTheStopStringAcrossPieces) {
  EXPECT_EQ(Match({"END"}, {"abc E", "N", "D tail"}), std::make_pair(std::string("abc "), true));
  EXPECT_EQ(Match({"END"}, {"abcEND"}), std::make_pair(std::string("abc"), true));
  EXPECT_EQ(Match({"\n\n"}, {"a\n", "\nb"}), std::make_pair(std::string("a"), true));
}

TEST(StopMatcherTest, HoldsBackOnlyPossiblePrefixes) {
  StopStringMatcher matcher({"stop"});
  EXPECT_EQ(matcher.Push("a st").text, "a ");  // "st" may begin "stop"
  EXPECT_EQ(matcher.Push("ep").text, "step");  // it did not
  EXPECT_EQ(matcher.Push("s").text, "");
  EXPECT_EQ(matcher.Flush(), "s");
}

TEST(StopMatcherTest, EarliestMatchWinsAndNoStopsPassThrough) {
  EXPECT_EQ(Match({"xyz", "b"}, {"abxyz"}), std::make_pair(std::string("a"), true));
  EXPECT_EQ(Match({}, {"plain ", "text"}), std::make_pair(std::string("plain text"), false));
  // Multi-byte characters are never split by the hold-back.
  EXPECT_EQ(Match({"é!"}, {"café", " ok"}), std::make_pair(std::string("café ok"), false));
  EXPECT_EQ(Match({"é!"}, {"café", "!"}), std::make_pair(std::string("caf"), true));
}

}  // namespace
}  // namespace sinkserve
