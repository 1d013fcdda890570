// Security: TLS (plaintext refused), bearer-token authentication, request size limits, and a
// metrics port that serves nothing but /metrics. Real certificates (made by openssl for each
// run), real servers, real clients.
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>

#include "absl/strings/match.h"
#include "tests/server/server_test_util.h"
#include "tests/unit/test_util.h"

namespace sinkserve::testing {
namespace {

using HealthStatus = grpc::health::v1::HealthCheckResponse;

std::shared_ptr<grpc::Channel> TlsChannel(int port, const std::string& root_pem) {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = root_pem;
  return grpc::CreateChannel("localhost:" + std::to_string(port), grpc::SslCredentials(ssl));
}

grpc::Status ModelInfo(v1::Sinkserve::Stub& stub, const std::string& token = "") {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  v1::ModelInfo info;
  return stub.GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
}

HealthStatus::ServingStatus Health(std::shared_ptr<grpc::Channel> channel) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  HealthStatus response;
  const grpc::Status status = grpc::health::v1::Health::NewStub(channel)->Check(
      &context, grpc::health::v1::HealthCheckRequest(), &response);
  return status.ok() ? response.status() : HealthStatus::UNKNOWN;
}

std::string RandomToken() {
  std::mt19937_64 rng(TestSeed());
  return std::to_string(rng()) + "-" + std::to_string(rng());
}

TEST(SecurityTest, TlsServesTlsAndRefusesPlaintext) {
  TempDir dir;
  MakeCertificate(dir);
  server::ServerOptions options = TestServerOptions();
  options.tls_cert_file = dir.File("cert.pem");
  options.tls_key_file = dir.File("key.pem");
  TestServer server(options);
  std::shared_ptr<grpc::Channel> tls =
      TlsChannel(server.server().port(), ReadTextFile(dir.File("cert.pem")));
  std::unique_ptr<v1::Sinkserve::Stub> stub = v1::Sinkserve::NewStub(tls);
  EXPECT_TRUE(ModelInfo(*stub).ok());
  const GenerateOutput output = Generate(*stub, GreedyRequest("over tls", 8));
  EXPECT_TRUE(output.status.ok()) << output.status.error_message();
  EXPECT_EQ(output.token_ids.size(), 8u);

  // Plaintext gets no answer from the TLS port: the handshake never succeeds.
  const grpc::Status plaintext = ModelInfo(server.stub());
  EXPECT_EQ(plaintext.error_code(), grpc::StatusCode::UNAVAILABLE) << plaintext.error_message();
  // A client that does not trust the certificate is refused as well.
  TempDir other;
  MakeCertificate(other);
  EXPECT_FALSE(ModelInfo(*v1::Sinkserve::NewStub(TlsChannel(server.server().port(),
                                                            ReadTextFile(other.File("cert.pem")))))
                   .ok());
}

// `sinkserve health` (the image's HEALTHCHECK) against a TLS server: --tls-ca or
// $SINKSERVE_TLS_CA, and --tls-server-name (or $SINKSERVE_TLS_SERVER_NAME) when the address's
// host is not the certificate's name; plaintext and a wrong name fail.
TEST(SecurityTest, HealthCommandProbesATlsServer) {
  TempDir dir;
  MakeCertificate(dir);  // names localhost and 127.0.0.1
  server::ServerOptions options = TestServerOptions();
  options.tls_cert_file = dir.File("cert.pem");
  options.tls_key_file = dir.File("key.pem");
  TestServer server(options);
  const std::string port = std::to_string(server.server().port());
  auto probe = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {std::string(SINKSERVE_BINARY_DIR) + "/server/sinkserve", "health"});
    ChildProcess process(args, dir.File("health.log"));
    return process.Wait(std::chrono::seconds(20));
  };
  EXPECT_EQ(probe({"--address", "localhost:" + port, "--tls-ca", dir.File("cert.pem")}), 0)
      << ReadTextFile(dir.File("health.log"));
  // The last line: sanitizer builds may print their own report before it (LSan's suppressions).
  EXPECT_TRUE(absl::EndsWith(ReadTextFile(dir.File("health.log")), "\nSERVING\n") ||
              ReadTextFile(dir.File("health.log")) == "SERVING\n")
      << ReadTextFile(dir.File("health.log"));
  EXPECT_EQ(probe({"--address", "127.0.0.1:" + port, "--tls-ca", dir.File("cert.pem"),
                   "--tls-server-name", "localhost"}),
            0)
      << ReadTextFile(dir.File("health.log"));
  EXPECT_EQ(probe({"--address", "127.0.0.1:" + port, "--tls-ca", dir.File("cert.pem"),
                   "--tls-server-name", "elsewhere.example"}),
            1);
  EXPECT_EQ(probe({"--address", "localhost:" + port}), 1);  // plaintext to a TLS port
  // The HEALTHCHECK's fixed command line, configured by the environment.
  setenv("SINKSERVE_TLS_CA", dir.File("cert.pem").c_str(), 1);
  EXPECT_EQ(probe({"--address", "localhost:" + port}), 0) << ReadTextFile(dir.File("health.log"));
  unsetenv("SINKSERVE_TLS_CA");
}

TEST(SecurityTest, BearerTokenRequiredWhenConfigured) {
  server::ServerOptions options = TestServerOptions();
  options.auth_token = RandomToken();
  TestServer server(options);
  for (const std::string& token : {std::string(), std::string("wrong"), options.auth_token + "x"}) {
    const grpc::Status status = ModelInfo(server.stub(), token);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << token;
    EXPECT_EQ(status.error_message().find(options.auth_token), std::string::npos);
  }
  // Streams are refused before any work, with the same code.
  const GenerateOutput refused = Generate(server.stub(), GreedyRequest("no token", 4));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(refused.token_ids.empty());
  // The right token works for unary and streaming calls.
  EXPECT_TRUE(ModelInfo(server.stub(), options.auth_token).ok());
  grpc::ClientContext context;
  context.AddMetadata("authorization", "Bearer " + options.auth_token);
  const GenerateOutput output = Generate(server.stub(), GreedyRequest("token", 4), &context);
  EXPECT_TRUE(output.status.ok()) << output.status.error_message();
  // Health needs no token (probes).
  EXPECT_EQ(Health(server.channel()), HealthStatus::SERVING);
  const std::string metrics = HttpGet(server.server().metrics_port(), "/metrics");
  EXPECT_EQ(
      MetricValue(
          metrics,
          "sinkserve_requests_total{model_name=\"demo\",api=\"grpc\",code=\"UNAUTHENTICATED\",rpc="
          "\"GetModelInfo\"}"),
      3);
}

// RFC 7235: the scheme in any case, one or more spaces after it. Two `authorization` entries
// are refused, whichever of them holds the token: the server does not pick one.
TEST(SecurityTest, BearerSchemeAnyCaseAndExactlyOneHeader) {
  server::ServerOptions options = TestServerOptions();
  options.auth_token = RandomToken();
  TestServer server(options);
  auto model_info = [&](const std::vector<std::string>& values) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    for (const std::string& value : values) context.AddMetadata("authorization", value);
    v1::ModelInfo info;
    return server.stub().GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
  };
  for (const char* scheme : {"Bearer ", "bearer ", "BEARER ", "bEaReR ", "Bearer   "}) {
    const grpc::Status status = model_info({scheme + options.auth_token});
    EXPECT_TRUE(status.ok()) << "'" << scheme << "': " << status.error_message();
  }
  for (const std::string& value : {"Bearer" + options.auth_token, "Basic " + options.auth_token,
                                   "Bearers " + options.auth_token, options.auth_token}) {
    EXPECT_EQ(model_info({value}).error_code(), grpc::StatusCode::UNAUTHENTICATED) << value;
  }
  const std::string right = "Bearer " + options.auth_token;
  for (const std::vector<std::string>& values :
       {std::vector<std::string>{right, right}, {right, "Bearer wrong"}, {"Bearer wrong", right}}) {
    const grpc::Status status = model_info(values);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << values[0];
    EXPECT_NE(status.error_message().find("sent 2 times"), std::string::npos)
        << status.error_message();
    EXPECT_EQ(status.error_message().find(options.auth_token), std::string::npos);
  }
}

TEST(SecurityTest, MessagesOverTheLimitAreRefused) {
  server::ServerOptions options = TestServerOptions();
  options.max_message_bytes = 64 << 10;
  TestServer server(options);
  // Within the limit the request is parsed (and here refused by validation: no such session).
  auto get_session = [&](size_t id_bytes) {
    grpc::ClientContext context;
    v1::GetSessionRequest request;
    request.set_session_id(std::string(id_bytes, 's'));
    v1::Session session;
    return server.stub().GetSession(&context, request, &session);
  };
  EXPECT_EQ(get_session(60 << 10).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  const grpc::Status too_big = get_session(65 << 10);
  EXPECT_EQ(too_big.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << too_big.error_message();
  // The server is unharmed.
  EXPECT_TRUE(Generate(server.stub(), GreedyRequest("after", 4)).status.ok());
}

TEST(SecurityTest, MetricsPortServesOnlyMetrics) {
  TestServer server;
  ASSERT_TRUE(Generate(server.stub(), GreedyRequest("metrics", 4)).status.ok());
  const int metrics_port = server.server().metrics_port();
  EXPECT_NE(HttpGet(metrics_port, "/metrics")
                .find("sinkserve_generation_tokens_total{model_name=\"demo\",api=\"grpc\"} 4"),
            std::string::npos);
  for (const char* path : {"/", "/index.html", "/metrics/../etc/passwd", "/../../etc/passwd",
                           "/debug", "/sinkserve.v1.Sinkserve/GetModelInfo"}) {
    const std::string body = HttpGet(metrics_port, path);
    EXPECT_EQ(body.find("sinkserve_"), std::string::npos) << path;
    EXPECT_EQ(body.find("root:"), std::string::npos) << path;
  }
  // Not a gRPC endpoint either: the RPCs live on the gRPC port only.
  std::unique_ptr<v1::Sinkserve::Stub> stub = v1::Sinkserve::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(metrics_port), grpc::InsecureChannelCredentials()));
  EXPECT_FALSE(ModelInfo(*stub).ok());
}

// The flags of the real program: TLS with a token read from a file; a missing certificate
// refuses to start naming the file.
TEST(SecurityTest, ProgramFlags) {
  TempDir dir;
  MakeCertificate(dir);
  const std::string token = RandomToken();
  WriteTextFile(dir.File("token"), token + "\n");
  {
    ServingProgram program(dir.File("server.log"),
                           {"--metrics-port", "-1", "--tls-cert", dir.File("cert.pem"), "--tls-key",
                            dir.File("key.pem"), "--auth-token-file", dir.File("token")});
    ASSERT_GT(program.port(), 0) << program.log();
    std::unique_ptr<v1::Sinkserve::Stub> stub =
        v1::Sinkserve::NewStub(TlsChannel(program.port(), ReadTextFile(dir.File("cert.pem"))));
    EXPECT_EQ(ModelInfo(*stub).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_TRUE(ModelInfo(*stub, token).ok());
    EXPECT_EQ(program.log().find(token), std::string::npos);
    program.process().Signal(SIGTERM);
    EXPECT_EQ(program.process().Wait(std::chrono::seconds(30)), std::optional<int>(0));
  }
  ServingProgram missing(dir.File("missing.log"),
                         {"--metrics-port", "-1", "--tls-cert", dir.File("nope.pem"), "--tls-key",
                          dir.File("key.pem")});
  EXPECT_EQ(missing.port(), 0);
  EXPECT_EQ(missing.process().Wait(std::chrono::seconds(30)), std::optional<int>(1));
  EXPECT_NE(missing.log().find(dir.File("nope.pem")), std::string::npos) << missing.log();
}

}  // namespace
}  // namespace sinkserve::testing
