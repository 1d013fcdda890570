// The session file (engine/serving/session_file.h) and its checksum: CRC-32C against the
// standard check value, a file written by an independent encoder (the fuzz corpus seed, made by
// a Python script from the format's description) parses to the fields it was given, every
// record round-trips, and damage anywhere is DATA_LOSS.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <random>

#include "common/base/crc32c.h"
#include "engine/serving/session_file.h"

namespace sinkserve {
namespace {

std::vector<std::byte> Bytes(std::string_view text) {
  const auto* data = reinterpret_cast<const std::byte*>(text.data());
  return std::vector<std::byte>(data, data + text.size());
}

TEST(Crc32cTest, StandardCheckValueAndChaining) {
  EXPECT_EQ(Crc32c(Bytes("123456789")), 0xE3069283u);
  EXPECT_EQ(Crc32c(Bytes("")), 0u);
  // Continuing a CRC over a second part equals the CRC of the whole, at every split.
  std::mt19937 random(std::random_device{}());
  std::vector<std::byte> data(1000);
  for (std::byte& b : data) b = static_cast<std::byte>(random());
  const uint32_t whole = Crc32c(data);
  for (size_t split : {0, 1, 7, 8, 9, 500, 999, 1000}) {
    const std::span<const std::byte> all(data);
    EXPECT_EQ(Crc32c(all.subspan(split), Crc32c(all.first(split))), whole) << split;
  }
}

TEST(SessionFileTest, ParsesAFileFromAnIndependentEncoder) {
  std::ifstream in(std::string(SINKSERVE_FIXTURES) +
                       "/../fuzz/corpus/session_file_fuzz/streaming_session.bin",
                   std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(text.empty());
  const std::vector<std::byte> file = Bytes(text);
  absl::StatusOr<ParsedSessionFile> parsed = ParseSessionFile(file);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const SessionRecord& r = parsed->record;
  EXPECT_EQ(r.id, "s_fuzz");
  EXPECT_EQ(r.policy.kind, CachePolicy::Kind::kCachePolicyStreaming);
  EXPECT_EQ(r.policy.sink_tokens, 2);
  EXPECT_EQ(r.policy.window_tokens, 4);
  EXPECT_EQ(r.random_state, 12345u);
  EXPECT_EQ(r.sampler_params.top_k, 40);
  EXPECT_EQ(r.sampling_defaults.top_k, 40);
  EXPECT_FALSE(r.sampling_defaults.top_p.has_value());
  EXPECT_EQ(r.sampling_defaults.seed, 7u);
  EXPECT_EQ(r.tokens_seen, 9);
  EXPECT_EQ(r.tokens_evicted, 3);
  EXPECT_EQ(r.unfed_tokens, std::vector<int32_t>{5});
  EXPECT_EQ(r.history.size(), 9u);
  EXPECT_EQ(r.requests, 2u);
  ASSERT_EQ(parsed->cache.size(), 64u);
  EXPECT_EQ(parsed->cache[63], std::byte{63});

  // Our encoder writes the same bytes.
  std::vector<std::byte> again = EncodeSessionHeader(r, parsed->cache);
  again.insert(again.end(), parsed->cache.begin(), parsed->cache.end());
  EXPECT_EQ(again, file);

  // Any flipped byte and any truncation is DATA_LOSS.
  for (size_t at = 0; at < file.size(); ++at) {
    std::vector<std::byte> damaged = file;
    damaged[at] ^= std::byte{0x01};
    EXPECT_TRUE(absl::IsDataLoss(ParseSessionFile(damaged).status())) << "byte " << at;
    EXPECT_TRUE(absl::IsDataLoss(ParseSessionFile(std::span(file).first(at)).status()))
        << "truncated to " << at;
  }
}

}  // namespace
}  // namespace sinkserve
