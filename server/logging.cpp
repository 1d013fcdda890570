#include "server/logging.h"

#include <atomic>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/logging.h"
#include "nlohmann/json.hpp"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/sinks/stdout_sinks.h"

namespace sinkserve::server {
namespace {

std::atomic<bool> json_format{false};
// Log text may quote request bytes: never let a stray byte stop a log line.
constexpr auto kReplace = nlohmann::json::error_handler_t::replace;

std::string TextValue(const LogField& field) {
  return std::visit(
      [](const auto& value) -> std::string {
        using T = std::decay_t<decltype(value)>;
        if constexpr (std::is_same_v<T, std::string_view>) {
          const bool plain = !value.empty() && value.find_first_of(" \"=\n\t") == std::string_view::npos;
          return plain ? std::string(value) : nlohmann::json(std::string(value)).dump(-1, ' ', false, kReplace);
        } else if constexpr (std::is_same_v<T, double>) {
          char buffer[32];
          std::snprintf(buffer, sizeof(buffer), "%.3f", value);
          return buffer;
        } else if constexpr (std::is_same_v<T, bool>) {
          return value ? "true" : "false";
        } else {
          return std::to_string(value);
        }
      },
      field.value);
}

// protobuf's own log lines, through ours. Its complaint about invalid UTF-8 in a request is
// expected (the request gets INVALID_ARGUMENT naming the field): debug only.
void ProtobufLog(google::protobuf::LogLevel level, const char* file, int line,
                 const std::string& message) {
  const bool expected = message.find("invalid UTF-8") != std::string::npos;
  Log(expected ? spdlog::level::debug
               : level >= google::protobuf::LOGLEVEL_ERROR ? spdlog::level::err
                                                           : spdlog::level::warn,
      "protobuf", {{"message", message}, {"file", file}, {"line", line}});
}

}  // namespace

absl::Status ConfigureLogging(const std::string& level, const std::string& format) {
  const spdlog::level::level_enum parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--log-level must be trace, debug, info, warn, error, critical or off, got \"", level, "\""));
  }
  if (format != "text" && format != "json") {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-format must be text or json, got \"", format, "\""));
  }
  json_format = format == "json";
  const char* name = json_format ? "sinkserve-json" : "sinkserve-text";
  spdlog::drop(name);
  std::shared_ptr<spdlog::logger> logger =
      json_format ? spdlog::stderr_logger_mt(name) : spdlog::stderr_color_mt(name);
  logger->set_pattern(json_format ? R"({"ts":"%Y-%m-%dT%H:%M:%S.%e%z","level":"%l",%v})"
                                  : "[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");
  logger->set_level(parsed);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  google::protobuf::SetLogHandler(&ProtobufLog);
  return absl::OkStatus();
}

void Log(spdlog::level::level_enum level, std::string_view message,
         std::initializer_list<LogField> fields) {
  if (!spdlog::should_log(level)) return;
  std::string line;
  if (json_format) {
    line = absl::StrCat("\"msg\":", nlohmann::json(std::string(message)).dump(-1, ' ', false, kReplace));
    for (const LogField& field : fields) {
      nlohmann::json value;
      std::visit(
          [&](const auto& v) {
            if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::string_view>) {
              value = std::string(v);
            } else {
              value = v;
            }
          },
          field.value);
      absl::StrAppend(&line, ",", nlohmann::json(std::string(field.key)).dump(-1, ' ', false, kReplace), ":",
                      value.dump(-1, ' ', false, kReplace));
    }
  } else {
    line = std::string(message);
    for (const LogField& field : fields) {
      absl::StrAppend(&line, " ", std::string(field.key), "=", TextValue(field));
    }
  }
  spdlog::log(level, "{}", line);
}

}  // namespace sinkserve::server
