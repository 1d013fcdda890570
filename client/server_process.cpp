#include "client/server_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/base/file.h"

extern char** environ;

namespace sinkserve::bench {

absl::StatusOr<std::vector<std::string>> SplitCommandLine(const std::string& command) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  char quote = 0;
  for (char c : command) {
    if (quote != 0) {
      if (c == quote) {
        quote = 0;
      } else {
        word += c;
      }
    } else if (c == '\'' || c == '"') {
      quote = c;
      in_word = true;
    } else if (c == ' ' || c == '\t' || c == '\n') {
      if (in_word) words.push_back(std::exchange(word, ""));
      in_word = false;
    } else {
      word += c;
      in_word = true;
    }
  }
  if (quote != 0) return absl::InvalidArgumentError(absl::StrCat("unclosed quote in: ", command));
  if (in_word) words.push_back(word);
  if (words.empty()) return absl::InvalidArgumentError("empty server command");
  return words;
}

int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  close(fd);
  return ok ? ntohs(address.sin_port) : 0;
}

absl::StatusOr<ServerProcess> ServerProcess::Spawn(const std::string& command,
                                                   const std::string& log_path) {
  absl::StatusOr<std::vector<std::string>> argv = SplitCommandLine(command);
  if (!argv.ok()) return argv.status();
  const int port = FreeLoopbackPort();
  const int metrics_port = FreeLoopbackPort();
  for (const std::string& arg : {std::string("--host"), std::string("127.0.0.1"),
                                 std::string("--port"), std::to_string(port),
                                 std::string("--metrics-port"), std::to_string(metrics_port),
                                 std::string("--http-port"), std::string("-1")}) {
    argv->push_back(arg);
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::vector<char*> args;
  for (std::string& arg : *argv) args.push_back(arg.data());
  args.push_back(nullptr);
  pid_t pid = -1;
  const int error = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot start \"", absl::StrJoin(*argv, " "), "\": ", strerror(error)));
  }
  return ServerProcess(pid, port, metrics_port, log_path);
}

ServerProcess::ServerProcess(ServerProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      port_(other.port_),
      metrics_port_(other.metrics_port_),
      log_path_(std::move(other.log_path_)),
      exit_code_(other.exit_code_) {}

ServerProcess::~ServerProcess() { Stop(); }

std::optional<int> ServerProcess::Exited() {
  if (exit_code_ || pid_ <= 0) return exit_code_;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  }
  return exit_code_;
}

uint64_t ServerProcess::PeakRssBytes() const {
  absl::StatusOr<std::string> status = ReadFile(absl::StrCat("/proc/", pid_, "/status"));
  if (!status.ok()) return 0;
  for (const absl::string_view line : absl::StrSplit(*status, '\n')) {
    if (absl::StartsWith(line, "VmHWM:")) {
      return std::stoull(std::string(line.substr(6))) * 1024;  // kB
    }
  }
  return 0;
}

void ServerProcess::Stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0 || Exited()) return;
  kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (!Exited() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!Exited()) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    exit_code_ = -SIGKILL;
  }
}

std::string ServerProcess::LogTail() const {
  absl::StatusOr<std::string> log = ReadFile(log_path_);
  if (!log.ok()) return "";
  std::vector<std::string> lines = absl::StrSplit(*log, '\n', absl::SkipEmpty());
  const size_t keep = std::min<size_t>(lines.size(), 8);
  return absl::StrJoin(lines.end() - static_cast<ptrdiff_t>(keep), lines.end(), "\n");
}

}  // namespace sinkserve::bench
