// Helpers for the server tests: a real sinkserve server on loopback (in-process, or the
// `sinkserve` program), real gRPC clients, a tiny HTTP GET, and the offline engine as the
// reference for generated tokens.
#pragma once

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/model.h"
#include "engine/sampler.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/logging.h"
#include "server/server.h"
#include "sinkserve/v1/sinkserve.grpc.pb.h"
#include "tests/unit/test_util.h"

namespace sinkserve::testing {

namespace v1 = ::sinkserve::v1;

// A fresh self-signed certificate for localhost / 127.0.0.1 in `dir` (cert.pem, key.pem).
inline void MakeCertificate(const TempDir& dir) {
  const std::string command =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
      "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout '" +
      dir.File("key.pem") + "' -out '" + dir.File("cert.pem") + "' 2>'" + dir.File("openssl.log") +
      "'";
  ASSERT_EQ(std::system(command.c_str()), 0) << ReadTextFile(dir.File("openssl.log"));
}

// Options for an in-process test server: loopback, free ports, the demo model on one thread.
inline server::ServerOptions TestServerOptions() {
  server::ServerOptions options;
  options.host = "127.0.0.1";
  options.port = 0;
  options.metrics_port = 0;
  options.model.path = "demo";
  options.model.threads = 1;
  options.grace_period = std::chrono::milliseconds(5000);
  return options;
}

// A started in-process server and a client channel to it.
class TestServer {
 public:
  explicit TestServer(server::ServerOptions options = TestServerOptions()) {
    static const bool logging = [] {
      return server::ConfigureLogging(std::getenv("SINKSERVE_TEST_LOG") ? "info" : "warn", "text")
          .ok();
    }();
    (void)logging;
    server_ = std::make_unique<server::Server>(std::move(options));
    const absl::Status status = server_->Start();
    EXPECT_TRUE(status.ok()) << status;
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::Sinkserve::NewStub(channel_);
  }

  server::Server& server() { return *server_; }
  v1::Sinkserve::Stub& stub() { return *stub_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }
  // A fresh stub on a fresh channel (a separate HTTP/2 connection), connected before it is
  // returned: an RPC whose deadline has already passed on a channel that is still connecting
  // aborts the connection attempt, and gRPC 1.51 then fails the channel's next RPCs fast with
  // UNAVAILABLE ("failed to connect") — a client-side artefact the server tests must not see.
  std::unique_ptr<v1::Sinkserve::Stub> NewStub() {
    grpc::ChannelArguments args;
    args.SetInt("grpc.use_local_subchannel_pool", 1);
    std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(
        "127.0.0.1:" + std::to_string(server_->port()), grpc::InsecureChannelCredentials(), args);
    channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return v1::Sinkserve::NewStub(channel);
  }

 private:
  std::unique_ptr<server::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Sinkserve::Stub> stub_;
};

// Everything a Generate stream returned.
struct GenerateOutput {
  grpc::Status status;
  std::vector<v1::GenerateResponse> responses;
  std::vector<int32_t> token_ids;
  std::vector<float> logprobs;
  std::string text;
  std::string session_id;
  v1::GenerateResult result;
  bool has_result = false;
};

inline GenerateOutput Generate(v1::Sinkserve::Stub& stub, const v1::GenerateRequest& request,
                               grpc::ClientContext* context = nullptr) {
  grpc::ClientContext local;
  if (context == nullptr) context = &local;
  GenerateOutput output;
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub.Generate(context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    output.token_ids.insert(output.token_ids.end(), response.token_ids().begin(),
                            response.token_ids().end());
    output.logprobs.insert(output.logprobs.end(), response.logprobs().begin(),
                           response.logprobs().end());
    output.text += response.text();
    if (!response.session_id().empty()) output.session_id = response.session_id();
    if (response.has_result()) {
      output.result = response.result();
      output.has_result = true;
    }
    output.responses.push_back(response);
  }
  output.status = reader->Finish();
  return output;
}

// A stream that ended OK is complete: it carries a final result, and the tokens it sent are the
// ones the result counts. A stream that ended otherwise either sent nothing or ended with a
// final message saying why (never a silent truncation).
inline ::testing::AssertionResult StreamComplete(const GenerateOutput& output) {
  if (output.status.ok()) {
    if (!output.has_result) return ::testing::AssertionFailure() << "OK stream without a result";
    if (output.token_ids.size() != output.result.generated_tokens()) {
      return ::testing::AssertionFailure() << "OK stream sent " << output.token_ids.size()
                                           << " tokens, its result counts "
                                           << output.result.generated_tokens();
    }
    return ::testing::AssertionSuccess();
  }
  if (!output.token_ids.empty() && !output.has_result &&
      output.status.error_code() != grpc::StatusCode::CANCELLED &&
      output.status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
    // Client-side cancels and deadlines end the call on the client: no final message expected.
    return ::testing::AssertionFailure()
           << "stream ended " << output.status.error_code() << " after "
           << output.token_ids.size() << " tokens without a final message";
  }
  return ::testing::AssertionSuccess();
}

inline v1::GenerateRequest GreedyRequest(const std::string& prompt, int max_new_tokens) {
  v1::GenerateRequest request;
  request.set_prompt_text(prompt);
  request.mutable_sampling()->set_temperature(0.0f);
  request.set_max_new_tokens(static_cast<uint32_t>(max_new_tokens));
  request.set_ignore_eos(true);
  return request;
}

// The offline engine's greedy continuation: feed `prompt` into `cache`, then argmax and feed,
// `max_new_tokens` times (the last token is not fed, as in the CLI and the server).
inline std::vector<int32_t> OfflineGreedy(Model& model, KvCache& cache,
                                          const std::vector<int32_t>& prompt, int max_new_tokens) {
  std::vector<float> logits(model.config().vocab_size);
  EXPECT_TRUE(FeedTokens(model.backend(), prompt, cache, logits).ok());
  Sampler sampler(SamplingParams{.temperature = 0.0f});
  std::vector<int32_t> generated;
  for (int i = 0; i < max_new_tokens; ++i) {
    const int32_t next = sampler.Sample(logits, {});
    generated.push_back(next);
    if (i + 1 == max_new_tokens) break;
    const int32_t step[1] = {next};
    EXPECT_TRUE(model.backend().Forward(step, cache, logits, false).ok());
  }
  return generated;
}

inline std::unique_ptr<Model> LoadDemoModel() {
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(ModelOptions{"demo", 1});
  EXPECT_TRUE(model.ok()) << model.status();
  return std::move(*model);
}

// A TCP connection to 127.0.0.1:port (its descriptor), or -1.
inline int ConnectLoopback(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Body of GET http://127.0.0.1:port/path ("" when the connection fails, or when a read waits
// longer than `timeout`; zero waits as long as it takes).
inline std::string HttpGet(int port, const std::string& path,
                           std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) {
  const int fd = ConnectLoopback(port);
  if (fd < 0) return "";
  const timeval limit{static_cast<time_t>(timeout.count() / 1000),
                      static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
  const std::string request =
      "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return "";
  }
  std::string response;
  char buffer[16384];
  for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) response.append(buffer, n);
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

// Value of the first sample line of `name` (with exactly these labels, e.g. `{phase="decode"}`)
// in a Prometheus text exposition; -1 when absent.
inline double MetricValue(const std::string& exposition, const std::string& series) {
  size_t at = 0;
  while ((at = exposition.find(series + " ", at)) != std::string::npos) {
    if (at == 0 || exposition[at - 1] == '\n') {
      return std::stod(exposition.substr(at + series.size() + 1));
    }
    at += series.size();
  }
  return -1;
}

// Polls `condition` every 10 ms for up to `timeout`.
template <typename Condition>
bool WaitFor(Condition condition, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return condition();
}

}  // namespace sinkserve::testing

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <fstream>
#include <sstream>

#include "nlohmann/json.hpp"

namespace sinkserve::testing {

// A child process started by a test (its stdout and stderr go to `log_path`); killed at
// destruction if still running.
class ChildProcess {
 public:
  ChildProcess(const std::vector<std::string>& argv, const std::string& log_path) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<char*> args;
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    if (posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~ChildProcess() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  void Signal(int signal) { kill(pid_, signal); }
  // Exit code (or -signal) once it exits within `timeout`; nullopt if it is still running.
  std::optional<int> Wait(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      if (exit_code_) return exit_code_;
      int status = 0;
      const pid_t done = waitpid(pid_, &status, WNOHANG);
      if (done == pid_) {
        exited_ = true;
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
        return exit_code_;
      }
      if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  std::optional<int> exit_code_;
};

// The real `sinkserve` program on loopback: a free gRPC port, one thread, a JSON log at
// `log_path`, then `flags`. The constructor returns once the program serves or exits.
class ServingProgram {
 public:
  // `prefix` runs the program under another command (e.g. setpriv, to drop privileges).
  ServingProgram(const std::string& log_path, const std::vector<std::string>& flags,
                 std::chrono::milliseconds timeout = std::chrono::seconds(10),
                 const std::vector<std::string>& prefix = {})
      : log_path_(log_path), process_(Command(flags, prefix), log_path) {
    WaitFor([&] { return ReadPort() || process_.Wait(std::chrono::milliseconds(0)); }, timeout);
  }

  // The gRPC port once serving; 0 if the program did not come up.
  int port() const { return port_; }
  ChildProcess& process() { return process_; }
  std::string log() const {
    std::ifstream file(log_path_);
    return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  // A plaintext channel to it.
  std::shared_ptr<grpc::Channel> channel() const {
    return grpc::CreateChannel(address(), grpc::InsecureChannelCredentials());
  }

 private:
  static std::vector<std::string> Command(const std::vector<std::string>& flags,
                                          const std::vector<std::string>& prefix) {
    std::vector<std::string> command = prefix;
    command.insert(command.end(),
                   {std::string(SINKSERVE_BINARY_DIR) + "/server/sinkserve", "--host", "127.0.0.1",
                    "--port", "0", "--http-port", "-1", "--threads", "1", "--log-format", "json"});
    command.insert(command.end(), flags.begin(), flags.end());
    return command;
  }
  // True once the log says "serving" (port_ is then the port it listed).
  bool ReadPort() {
    std::istringstream lines(log());
    int listening = 0;
    for (std::string line; std::getline(lines, line);) {
      const nlohmann::json entry = nlohmann::json::parse(line, nullptr, false);
      if (!entry.is_object()) continue;
      if (entry["msg"] == "listening") {
        const std::string address = entry["grpc"];
        listening = std::stoi(address.substr(address.rfind(':') + 1));
      }
      if (entry["msg"] == "serving") port_ = listening;
    }
    return port_ != 0;
  }

  std::string log_path_;
  ChildProcess process_;
  int port_ = 0;
};

// A TCP port free right now on 127.0.0.1 (for programs that cannot report the one they got).
inline int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

}  // namespace sinkserve::testing
