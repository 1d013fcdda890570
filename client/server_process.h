// A sinkserve server started by the table command for one configuration: the given command
// line plus --host 127.0.0.1 --port P --metrics-port M (free ports), output to a log file;
// stopped with SIGTERM (the server drains) after the configuration's runs.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sinkserve::bench {

// "a 'b c' d" -> {a, "b c", d}: whitespace-separated words, single or double quotes group.
absl::StatusOr<std::vector<std::string>> SplitCommandLine(const std::string& command);

// A TCP port free right now on 127.0.0.1.
int FreeLoopbackPort();

class ServerProcess {
 public:
  static absl::StatusOr<ServerProcess> Spawn(const std::string& command,
                                             const std::string& log_path);
  ServerProcess(ServerProcess&& other) noexcept;
  ServerProcess& operator=(ServerProcess&&) = delete;
  ~ServerProcess();  // Stop()

  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  const std::string& log_path() const { return log_path_; }

  // The exit code (or -signal) if it has exited.
  std::optional<int> Exited();
  // Peak resident set size so far (VmHWM of /proc/PID/status); 0 if unreadable.
  uint64_t PeakRssBytes() const;
  // SIGTERM, up to `grace` for the drain, then SIGKILL. Idempotent.
  void Stop(std::chrono::milliseconds grace = std::chrono::seconds(30));
  // The last lines of its log (for errors).
  std::string LogTail() const;

 private:
  ServerProcess(pid_t pid, int port, int metrics_port, std::string log_path)
      : pid_(pid), port_(port), metrics_port_(metrics_port), log_path_(std::move(log_path)) {}

  pid_t pid_ = -1;
  int port_ = 0;
  int metrics_port_ = 0;
  std::string log_path_;
  std::optional<int> exit_code_;
};

}  // namespace sinkserve::bench
