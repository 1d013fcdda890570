// Logging (spdlog): text or JSON lines on stderr, one line per finished request with its
// timings. A line is a message plus key/value fields:
//   text: [2024-05-01 12:00:00.123] [info] request rpc=Generate code=OK ttft_ms=12.3 ...
//   json: {"ts":"2024-05-01T12:00:00.123+0000","level":"info","msg":"request","rpc":"Generate",...}
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <variant>

#include "absl/status/status.h"
#include "spdlog/spdlog.h"

namespace sinkserve::server {

// level: trace, debug, info, warn, error, critical, off; format: text or json.
absl::Status ConfigureLogging(const std::string& level, const std::string& format);

struct LogField {
  std::string_view key;
  std::variant<std::string_view, int64_t, double, bool> value;

  LogField(std::string_view k, std::string_view v) : key(k), value(v) {}
  LogField(std::string_view k, const std::string& v) : key(k), value(std::string_view(v)) {}
  LogField(std::string_view k, const char* v) : key(k), value(std::string_view(v)) {}
  LogField(std::string_view k, int64_t v) : key(k), value(v) {}
  LogField(std::string_view k, int v) : key(k), value(int64_t{v}) {}
  LogField(std::string_view k, uint64_t v) : key(k), value(static_cast<int64_t>(v)) {}
  LogField(std::string_view k, double v) : key(k), value(v) {}
  LogField(std::string_view k, bool v) : key(k), value(v) {}
};

void Log(spdlog::level::level_enum level, std::string_view message,
         std::initializer_list<LogField> fields = {});

}  // namespace sinkserve::server
