// libFuzzer target for the session-file reader (engine/serving/session_file.h): ParseSessionFile
// on arbitrary bytes, as a session store may hold after a crash, a full disk or a bad copy.
// Promises checked: a refusal is DATA_LOSS saying "session file"; an accepted file's cache lies
// inside the input, and the record survives a round trip (encode, parse, encode gives the same
// bytes).
//
//   ./session_file_fuzz -max_total_time=60 corpus-work tests/fuzz/corpus/session_file_fuzz
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "engine/serving/session_file.h"

namespace {

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "session_file_fuzz: violated: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> file(reinterpret_cast<const std::byte*>(data), size);
  auto parsed = sinkserve::ParseSessionFile(file);
  if (!parsed.ok()) {
    Check(absl::IsDataLoss(parsed.status()), "a refusal is DATA_LOSS");
    Check(parsed.status().message().find("session file") != absl::string_view::npos,
          "a refusal says it is about the session file");
    return 0;
  }
  Check(parsed->cache.data() >= file.data() &&
            parsed->cache.data() + parsed->cache.size() <= file.data() + file.size(),
        "the cache lies inside the file");
  std::vector<std::byte> again = sinkserve::EncodeSessionHeader(parsed->record, parsed->cache);
  again.insert(again.end(), parsed->cache.begin(), parsed->cache.end());
  auto reparsed = sinkserve::ParseSessionFile(again);
  Check(reparsed.ok(), "an accepted record encodes to a file that parses");
  std::vector<std::byte> third = sinkserve::EncodeSessionHeader(reparsed->record, reparsed->cache);
  third.insert(third.end(), reparsed->cache.begin(), reparsed->cache.end());
  Check(third == again, "encode(parse(encode(record))) == encode(record)");
  return 0;
}
