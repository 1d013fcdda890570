// Sessions that survive (issue 18): a server with --session-store spills evicted sessions,
// writes them at drain or after every turn, and restores them on demand, bit for bit. The
// reference is the same conversation on a server that never lets the session go: tokens and
// per-token log-probabilities must be identical. Real servers on loopback (in-process, and the
// `sinkserve` program for restarts and crashes), real files, real signals.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <random>

#include "engine/serving/directory_session_store.h"
#include "tests/server/server_test_util.h"
#include "tests/unit/test_util.h"

namespace sinkserve::testing {
namespace {

namespace fs = std::filesystem;

struct Turn {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  bool operator==(const Turn&) const = default;
};

// Random words: fresh inputs every run.
std::string RandomText(std::mt19937_64& random, int words) {
  static const char* kWords[] = {"the",   "river",  "sinks",  "window", "token",
                                 "cache", "stream", "bright", "seven",  "under",
                                 "quiet", "model",  "a",      "of",     "runs"};
  std::string text;
  for (int i = 0; i < words; ++i) {
    text += kWords[random() % std::size(kWords)];
    text += ' ';
  }
  return text;
}

// A conversation: a session with its own sampling defaults (sampled, penalised, seeded: the
// random stream and the history must survive too) and a cache policy, then turns.
struct Conversation {
  std::optional<v1::CachePolicy> policy;
  uint64_t seed = 1;
  std::vector<std::string> prompts;
  int new_tokens = 24;
};

Conversation RandomConversation(std::mt19937_64& random, int turns, int words) {
  Conversation conversation;
  conversation.seed = random();
  for (int i = 0; i < turns; ++i) conversation.prompts.push_back(RandomText(random, words));
  return conversation;
}

v1::CachePolicy Streaming(int sink, int window) {
  v1::CachePolicy policy;
  policy.mutable_streaming()->set_sink_tokens(sink);
  policy.mutable_streaming()->set_window_tokens(window);
  return policy;
}

std::string CreateSession(v1::Sinkserve::Stub& stub, const Conversation& conversation) {
  grpc::ClientContext context;
  v1::CreateSessionRequest create;
  if (conversation.policy) *create.mutable_cache_policy() = *conversation.policy;
  create.mutable_sampling_defaults()->set_temperature(0.9f);
  create.mutable_sampling_defaults()->set_top_k(40);
  create.mutable_sampling_defaults()->set_repetition_penalty(1.2f);
  create.mutable_sampling_defaults()->set_seed(conversation.seed);
  v1::Session session;
  const grpc::Status status = stub.CreateSession(&context, create, &session);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return session.session_id();
}

GenerateOutput RunTurn(v1::Sinkserve::Stub& stub, const std::string& session_id,
                       const std::string& prompt, int new_tokens) {
  v1::GenerateRequest request;
  request.set_session_id(session_id);
  request.set_prompt_text(prompt);
  request.set_max_new_tokens(static_cast<uint32_t>(new_tokens));
  request.set_ignore_eos(true);
  request.set_return_logprobs(true);
  return Generate(stub, request);
}

Turn OkTurn(v1::Sinkserve::Stub& stub, const std::string& session_id, const std::string& prompt,
            int new_tokens) {
  GenerateOutput output = RunTurn(stub, session_id, prompt, new_tokens);
  EXPECT_TRUE(output.status.ok()) << output.status.error_message();
  EXPECT_EQ(static_cast<int>(output.token_ids.size()), new_tokens);
  return Turn{output.token_ids, output.logprobs};
}

// Runs `conversation`; `between(session_id)` runs before every turn after the first.
std::vector<Turn> Converse(v1::Sinkserve::Stub& stub, const Conversation& conversation,
                           const std::function<void(const std::string&)>& between = {}) {
  const std::string id = CreateSession(stub, conversation);
  std::vector<Turn> turns;
  for (size_t i = 0; i < conversation.prompts.size(); ++i) {
    if (i > 0 && between) between(id);
    turns.push_back(OkTurn(stub, id, conversation.prompts[i], conversation.new_tokens));
  }
  return turns;
}

absl::StatusOr<v1::Session> GetSession(v1::Sinkserve::Stub& stub, const std::string& id) {
  grpc::ClientContext context;
  v1::GetSessionRequest request;
  request.set_session_id(id);
  v1::Session session;
  const grpc::Status status = stub.GetSession(&context, request, &session);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  }
  return session;
}

server::ServerOptions StoreOptions(const std::string& dir) {
  server::ServerOptions options = TestServerOptions();
  options.session_store_dir = dir;
  return options;
}

std::string SessionFile(const std::string& dir, const std::string& id) {
  return dir + "/" + id + ".session";
}

int FilesIn(const std::string& dir) {
  if (!fs::exists(dir)) return 0;
  return static_cast<int>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

// Evicts every idle session of a --max-sessions 1 server by creating another one (which is
// then the one in memory).
void EvictByNewSession(v1::Sinkserve::Stub& stub) {
  grpc::ClientContext context;
  v1::Session filler;
  ASSERT_TRUE(stub.CreateSession(&context, v1::CreateSessionRequest(), &filler).ok());
}

// --- Exactness ---------------------------------------------------------------------------

struct ExactnessCase {
  const char* name;
  WeightFormat quant;
  std::optional<v1::CachePolicy> policy;
};

class ExactnessTest : public ::testing::TestWithParam<ExactnessCase> {};

TEST_P(ExactnessTest, SpilledAndRestoredBetweenEveryTurnEqualsUninterrupted) {
  std::mt19937_64 random(std::random_device{}());
  Conversation conversation = RandomConversation(random, 3, 30);
  conversation.policy = GetParam().policy;

  server::ServerOptions reference_options = TestServerOptions();
  reference_options.model.quant = GetParam().quant;
  std::vector<Turn> expected;
  {
    TestServer reference(reference_options);
    expected = Converse(reference.stub(), conversation);
  }

  TempDir dir;
  server::ServerOptions options = StoreOptions(dir.path());
  options.model.quant = GetParam().quant;
  options.scheduler.session_limits.max_sessions = 1;
  TestServer server(options);
  int spills = 0;
  const std::vector<Turn> got = Converse(server.stub(), conversation, [&](const std::string& id) {
    EvictByNewSession(server.stub());
    ++spills;
    absl::StatusOr<v1::Session> session = GetSession(server.stub(), id);
    ASSERT_TRUE(session.ok()) << session.status();
    EXPECT_EQ(session->location(), v1::SESSION_LOCATION_STORE);
    EXPECT_TRUE(fs::exists(SessionFile(dir.path(), id)));
  });
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].tokens, expected[i].tokens) << "turn " << i;
    EXPECT_EQ(got[i].logprobs, expected[i].logprobs) << "turn " << i;
  }
  const std::string metrics = HttpGet(server.server().metrics_port(), "/metrics");
  EXPECT_EQ(MetricValue(metrics, "sinkserve_session_restores_total{model_name=\"demo\"}"), spills);
  EXPECT_GE(MetricValue(metrics,
                        "sinkserve_session_store_writes_total{model_name=\"demo\",result=\"ok\","
                        "trigger=\"spill\"}"),
            spills);
  EXPECT_GT(MetricValue(metrics, "sinkserve_session_store_bytes{model_name=\"demo\"}"), 0);
  EXPECT_EQ(MetricValue(metrics, "sinkserve_session_restore_seconds_count{model_name=\"demo\"}"),
            spills);
}

INSTANTIATE_TEST_SUITE_P(
    Formats, ExactnessTest,
    ::testing::Values(
        ExactnessCase{"fp16_streaming_evicting", WeightFormat::kF16, Streaming(4, 24)},
        ExactnessCase{"int8_streaming_evicting", WeightFormat::kInt8, Streaming(4, 24)},
        ExactnessCase{"nf4_streaming_evicting", WeightFormat::kNf4, Streaming(2, 40)},
        ExactnessCase{"as_stored_default_policy", WeightFormat::kAsStored, std::nullopt},
        ExactnessCase{"fp16_dense", WeightFormat::kF16,
                      [] {
                        v1::CachePolicy dense;
                        dense.mutable_dense()->set_capacity_tokens(1024);
                        return dense;
                      }()}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(SessionStoreTest, StreamingSessionReportsEvictionsAfterRestore) {
  TempDir dir;
  server::ServerOptions options = StoreOptions(dir.path());
  options.scheduler.session_limits.max_sessions = 1;
  TestServer server(options);
  std::mt19937_64 random(std::random_device{}());
  Conversation conversation = RandomConversation(random, 1, 60);
  conversation.policy = Streaming(4, 16);
  const std::string id = CreateSession(server.stub(), conversation);
  OkTurn(server.stub(), id, conversation.prompts[0], 20);
  absl::StatusOr<v1::Session> before = GetSession(server.stub(), id);
  ASSERT_TRUE(before.ok());
  EvictByNewSession(server.stub());
  absl::StatusOr<v1::Session> stored = GetSession(server.stub(), id);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->location(), v1::SESSION_LOCATION_STORE);
  EXPECT_EQ(stored->tokens_seen(), before->tokens_seen());
  EXPECT_EQ(stored->tokens_evicted(), before->tokens_evicted());
  EXPECT_GT(stored->tokens_evicted(), 0u);
  OkTurn(server.stub(), id, "", 5);
  absl::StatusOr<v1::Session> after = GetSession(server.stub(), id);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->location(), v1::SESSION_LOCATION_MEMORY);
  EXPECT_EQ(after->tokens_seen(), before->tokens_seen() + 5);
  EXPECT_FALSE(fs::exists(SessionFile(dir.path(), id)));  // memory holds it now
}

TEST(SessionStoreTest, CacheMemoryLimitSpillsInsteadOfDropping) {
  TempDir dir;
  server::ServerOptions options = StoreOptions(dir.path());
  // Room for one default-policy cache of the demo model (4 layers x 4 heads x 64 x 324 x 2 x 4).
  options.scheduler.session_limits.max_cache_bytes = 4 * 4 * 64 * 324 * 2 * 4 + 1000;
  TestServer server(options);
  const std::string first = CreateSession(server.stub(), Conversation{});
  OkTurn(server.stub(), first, "first", 4);
  const std::string second = CreateSession(server.stub(), Conversation{});
  EXPECT_TRUE(fs::exists(SessionFile(dir.path(), first)));
  OkTurn(server.stub(), first, "again", 4);  // restored; `second` spilled to make room
  EXPECT_TRUE(fs::exists(SessionFile(dir.path(), second)));
}

// --- Restart and crash (the real program) ------------------------------------------------

// 20 sessions, one turn each, on `stub`; their ids.
std::vector<std::string> FirstTurns(v1::Sinkserve::Stub& stub,
                                    const std::vector<Conversation>& conversations) {
  std::vector<std::string> ids;
  for (const Conversation& conversation : conversations) {
    ids.push_back(CreateSession(stub, conversation));
    OkTurn(stub, ids.back(), conversation.prompts[0], conversation.new_tokens);
  }
  return ids;
}

// The conversations' second turns on a server that kept every session in memory.
std::vector<Turn> ReferenceSecondTurns(const std::vector<Conversation>& conversations) {
  TestServer reference;
  const std::vector<std::string> ids = FirstTurns(reference.stub(), conversations);
  std::vector<Turn> turns;
  for (size_t i = 0; i < ids.size(); ++i) {
    turns.push_back(
        OkTurn(reference.stub(), ids[i], conversations[i].prompts[1], conversations[i].new_tokens));
  }
  return turns;
}

TEST(SessionStoreTest, SigtermWritesEveryIdleSessionAndANewServerContinuesThemAll) {
  std::mt19937_64 random(std::random_device{}());
  std::vector<Conversation> conversations;
  for (int i = 0; i < 20; ++i) conversations.push_back(RandomConversation(random, 2, 12));
  const std::vector<Turn> expected = ReferenceSecondTurns(conversations);

  TempDir dir, logs;
  std::vector<std::string> ids;
  {
    ServingProgram first(logs.File("first.log"),
                         {"--session-store", dir.path(), "--metrics-port", "-1"});
    ASSERT_NE(first.port(), 0) << first.log();
    ids = FirstTurns(*v1::Sinkserve::NewStub(first.channel()), conversations);
    first.process().Signal(SIGTERM);
    ASSERT_EQ(first.process().Wait(std::chrono::seconds(30)), 0) << first.log();
  }
  for (const std::string& id : ids) EXPECT_TRUE(fs::exists(SessionFile(dir.path(), id))) << id;

  ServingProgram second(logs.File("second.log"),
                        {"--session-store", dir.path(), "--metrics-port", "-1"});
  ASSERT_NE(second.port(), 0) << second.log();
  auto stub = v1::Sinkserve::NewStub(second.channel());
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(OkTurn(*stub, ids[i], conversations[i].prompts[1], conversations[i].new_tokens),
              expected[i])
        << "session " << i;
  }
}

TEST(SessionStoreTest, SigkillMidTurnLosesOnlyThatTurnWithPersistTurn) {
  std::mt19937_64 random(std::random_device{}());
  std::vector<Conversation> conversations;
  for (int i = 0; i < 5; ++i) conversations.push_back(RandomConversation(random, 2, 12));
  const std::vector<Turn> expected = ReferenceSecondTurns(conversations);

  TempDir dir, logs;
  std::vector<std::string> ids;
  {
    ServingProgram first(
        logs.File("first.log"),
        {"--session-store", dir.path(), "--session-persist", "turn", "--metrics-port", "-1"});
    ASSERT_NE(first.port(), 0) << first.log();
    auto stub = v1::Sinkserve::NewStub(first.channel());
    ids = FirstTurns(*stub, conversations);
    // A long second turn on session 0, killed while it streams.
    v1::GenerateRequest request;
    request.set_session_id(ids[0]);
    request.set_prompt_text(conversations[0].prompts[1]);
    request.set_max_new_tokens(4000);
    request.set_ignore_eos(true);
    grpc::ClientContext context;
    auto reader = stub->Generate(&context, request);
    v1::GenerateResponse response;
    ASSERT_TRUE(reader->Read(&response));  // it runs
    first.process().Signal(SIGKILL);
    ASSERT_EQ(first.process().Wait(std::chrono::seconds(10)), -SIGKILL);
    while (reader->Read(&response)) {
    }
    const grpc::Status killed = reader->Finish();
    EXPECT_FALSE(killed.ok()) << "the killed turn's client must hear an error, not silence";
    EXPECT_EQ(killed.error_code(), grpc::StatusCode::UNAVAILABLE) << killed.error_message();
  }
  ServingProgram second(
      logs.File("second.log"),
      {"--session-store", dir.path(), "--session-persist", "turn", "--metrics-port", "-1"});
  ASSERT_NE(second.port(), 0) << second.log();
  auto stub = v1::Sinkserve::NewStub(second.channel());
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(OkTurn(*stub, ids[i], conversations[i].prompts[1], conversations[i].new_tokens),
              expected[i])
        << "session " << i << " (session 0's killed turn is re-asked from its last finished turn)";
  }
}

// --- Faults ------------------------------------------------------------------------------

// A session with one turn, spilled to the store of a --max-sessions 1 server; its id.
std::string SpilledSession(TestServer& server) {
  const std::string id = CreateSession(server.stub(), Conversation{});
  OkTurn(server.stub(), id, "a turn before the spill", 6);
  EvictByNewSession(server.stub());
  return id;
}

void ExpectStillServes(TestServer& server) {
  GenerateOutput fresh = Generate(server.stub(), GreedyRequest("still serving", 3));
  EXPECT_TRUE(fresh.status.ok()) << fresh.status.error_message();
}

class DamagedFileTest : public ::testing::TestWithParam<const char*> {};

TEST_P(DamagedFileTest, IsDataLossNamingTheSessionAndIsQuarantined) {
  TempDir dir;
  server::ServerOptions options = StoreOptions(dir.path());
  options.scheduler.session_limits.max_sessions = 1;
  TestServer server(options);
  const std::string id = SpilledSession(server);
  const std::string path = SessionFile(dir.path(), id);
  const auto size = fs::file_size(path);
  const std::string damage = GetParam();
  if (damage == "truncated") {
    fs::resize_file(path, size / 2);
  } else {
    // A flipped bit in the header (the model section) or in the cache contents.
    std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
    const std::streamoff at =
        damage == "header_byte" ? 40 : static_cast<std::streamoff>(size - 100);
    file.seekg(at);
    char byte = 0;
    file.read(&byte, 1);
    byte ^= 0x10;
    file.seekp(at);
    file.write(&byte, 1);
  }
  GenerateOutput output = RunTurn(server.stub(), id, "after the damage", 4);
  EXPECT_EQ(output.status.error_code(), grpc::StatusCode::DATA_LOSS)
      << output.status.error_message();
  EXPECT_NE(output.status.error_message().find(id), std::string::npos);
  EXPECT_FALSE(fs::exists(path));
  EXPECT_EQ(FilesIn(dir.path() + "/quarantine"), 1);
  ExpectStillServes(server);
  const std::string metrics = HttpGet(server.server().metrics_port(), "/metrics");
  EXPECT_EQ(MetricValue(
                metrics,
                "sinkserve_session_restore_failures_total{model_name=\"demo\",reason=\"corrupt\"}"),
            1);
  // The id is free again: NOT_FOUND, not DATA_LOSS, from now on.
  EXPECT_EQ(RunTurn(server.stub(), id, "again", 1).status.error_code(),
            grpc::StatusCode::NOT_FOUND);
}

INSTANTIATE_TEST_SUITE_P(Damage, DamagedFileTest,
                         ::testing::Values("truncated", "header_byte", "cache_byte"));

// Int8 activations (--cpu-activations int8) compute other keys and values: a session cached
// under them does not continue under the exact path.
TEST(SessionStoreTest, ActivationModeIsPartOfTheModel) {
  TempDir dir;
  std::string id;
  {
    server::ServerOptions options = StoreOptions(dir.path());
    options.model.quant = WeightFormat::kInt8;
    options.model.cpu_activations = "int8";
    TestServer server(options);
    id = CreateSession(server.stub(), Conversation{});
    OkTurn(server.stub(), id, "saved under int8 activations", 4);
  }  // drained: written
  server::ServerOptions options = StoreOptions(dir.path());
  options.model.quant = WeightFormat::kInt8;
  TestServer server(options);
  GenerateOutput output = RunTurn(server.stub(), id, "under fp32 activations", 4);
  EXPECT_EQ(output.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(output.status.error_message().find("int8 activations"), std::string::npos)
      << output.status.error_message();
  ExpectStillServes(server);
}

TEST(SessionStoreTest, AnotherModelsFileIsFailedPreconditionNamingBoth) {
  TempDir dir;
  std::string id;
  {
    server::ServerOptions options = StoreOptions(dir.path());
    options.model.quant = WeightFormat::kInt8;
    TestServer int8_server(options);
    id = CreateSession(int8_server.stub(), Conversation{});
    OkTurn(int8_server.stub(), id, "saved under int8", 4);
  }  // drained: written
  ASSERT_TRUE(fs::exists(SessionFile(dir.path(), id)));
  TestServer server(StoreOptions(dir.path()));
  GenerateOutput output = RunTurn(server.stub(), id, "under another format", 4);
  EXPECT_EQ(output.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(output.status.error_message().find("int8"), std::string::npos)
      << output.status.error_message();
  EXPECT_NE(output.status.error_message().find("as stored"), std::string::npos)
      << output.status.error_message();
  EXPECT_TRUE(fs::exists(SessionFile(dir.path(), id)));  // kept for a server with that model
  ExpectStillServes(server);
}

TEST(SessionStoreTest, FullDiskKeepsTheSessionInMemoryAndCountsTheFailure) {
  TempDir dir;
  server::ServerOptions options = StoreOptions(dir.path());
  options.session_persist_turn = true;
  TestServer server(options);
  const std::string id = CreateSession(server.stub(), Conversation{});
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  rlimit tiny = saved;
  tiny.rlim_cur = 4096;  // far smaller than a session file: writes fail with EFBIG
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &tiny), 0);
  GenerateOutput output = RunTurn(server.stub(), id, "the disk is full", 5);
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &saved), 0);
  EXPECT_TRUE(output.status.ok()) << output.status.error_message();
  EXPECT_EQ(output.token_ids.size(), 5u);
  absl::StatusOr<v1::Session> session = GetSession(server.stub(), id);
  ASSERT_TRUE(session.ok());
  EXPECT_EQ(session->location(), v1::SESSION_LOCATION_MEMORY);
  const std::string metrics = HttpGet(server.server().metrics_port(), "/metrics");
  EXPECT_GE(MetricValue(metrics,
                        "sinkserve_session_store_writes_total{model_name=\"demo\",result=\"error\","
                        "trigger=\"turn\"}"),
            1);
  for (const auto& entry : fs::directory_iterator(dir.path())) {
    EXPECT_EQ(entry.path().extension(), ".session") << "left behind: " << entry.path();
  }
  // The disk has room again: the next turn is written.
  EXPECT_TRUE(RunTurn(server.stub(), id, "room again", 2).status.ok());
  EXPECT_TRUE(fs::exists(SessionFile(dir.path(), id)));
}

TEST(SessionStoreTest, ReadOnlyStoreKeepsTheSessionInMemoryAndLogsTheFailure) {
  TempDir dir, logs;
  std::vector<std::string> prefix;
  if (geteuid() == 0) {
    // Root writes anywhere: the server runs as nobody instead.
    prefix = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"};
  }
  ASSERT_EQ(chmod(dir.path().c_str(), 0555), 0);
  ServingProgram program(logs.File("server.log"),
                         {"--session-store", dir.path(), "--session-persist", "turn",
                          "--metrics-port", "-1", "--log-level", "debug"},
                         std::chrono::seconds(10), prefix);
  ASSERT_NE(program.port(), 0) << program.log();
  auto stub = v1::Sinkserve::NewStub(program.channel());
  const std::string id = CreateSession(*stub, Conversation{});
  EXPECT_TRUE(RunTurn(*stub, id, "read-only", 4).status.ok());
  EXPECT_TRUE(RunTurn(*stub, id, "still in memory", 4).status.ok());
  absl::StatusOr<v1::Session> session = GetSession(*stub, id);
  ASSERT_TRUE(session.ok());
  EXPECT_EQ(session->location(), v1::SESSION_LOCATION_MEMORY);
  EXPECT_NE(program.log().find("session store write failed"), std::string::npos) << program.log();
  EXPECT_EQ(FilesIn(dir.path()), 0);
  chmod(dir.path().c_str(), 0755);
}

TEST(SessionStoreTest, IdsWithPathCharactersAreRefusedAndNothingLeavesTheStore) {
  TempDir parent;
  const std::string dir = parent.File("store");
  TestServer server(StoreOptions(dir));
  for (const std::string id : {"../escape", "a/b", "..", "x\\y", "s_1.session"}) {
    EXPECT_EQ(RunTurn(server.stub(), id, "x", 1).status.error_code(),
              grpc::StatusCode::INVALID_ARGUMENT)
        << id;
    EXPECT_EQ(GetSession(server.stub(), id).status().code(), absl::StatusCode::kInvalidArgument)
        << id;
  }
  // The store itself refuses them too, whoever calls it.
  absl::StatusOr<std::unique_ptr<DirectorySessionStore>> store = DirectorySessionStore::Open(dir);
  ASSERT_TRUE(store.ok());
  const std::byte bytes[4] = {};
  const std::vector<std::string> bad = {"../escape", "/tmp/abs", "", std::string(200, 'a'), "a\nb"};
  for (const std::string& id : bad) {
    EXPECT_EQ((*store)->Save(id, bytes, bytes).code(), absl::StatusCode::kInvalidArgument) << id;
    EXPECT_EQ((*store)->Lease(id, "me", std::chrono::seconds(1)).code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(FilesIn(parent.path()), 1);  // only the store directory
  EXPECT_EQ(FilesIn(dir), 0);
}

TEST(SessionStoreTest, AnotherReplicasLeaseIsAbortedWithARetryHintUntilItExpires) {
  TempDir dir;
  server::ServerOptions options = StoreOptions(dir.path());
  options.scheduler.session_limits.max_sessions = 1;
  TestServer server(options);
  const std::string id = SpilledSession(server);
  const auto expiry = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch()) +
                      std::chrono::milliseconds(1500);
  WriteTextFile(dir.File(id + ".lease"), "replica-b\n" + std::to_string(expiry.count()) + "\n");
  GenerateOutput refused = RunTurn(server.stub(), id, "now", 2);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_NE(refused.status.error_message().find("replica-b"), std::string::npos);
  EXPECT_NE(refused.status.error_message().find("retry in"), std::string::npos);
  std::this_thread::sleep_for(std::chrono::milliseconds(1600));
  EXPECT_TRUE(RunTurn(server.stub(), id, "after the lease expired", 2).status.ok());
  const std::string metrics = HttpGet(server.server().metrics_port(), "/metrics");
  EXPECT_EQ(
      MetricValue(metrics,
                  "sinkserve_session_restore_failures_total{model_name=\"demo\",reason=\"lease\"}"),
      1);
}

TEST(SessionStoreTest, TwoServersRacingToRestoreNeverBothOwnASession) {
  TempDir dir;
  constexpr int kSessions = 12;
  std::vector<std::string> ids;
  {
    TestServer writer(StoreOptions(dir.path()));
    for (int i = 0; i < kSessions; ++i) {
      ids.push_back(CreateSession(writer.stub(), Conversation{}));
      OkTurn(writer.stub(), ids.back(), "before the race", 3);
    }
  }  // drained: all written
  server::ServerOptions a_options = StoreOptions(dir.path()), b_options = StoreOptions(dir.path());
  a_options.server_id = "replica-a";
  b_options.server_id = "replica-b";
  TestServer a(a_options), b(b_options);
  int both = 0, one = 0;
  for (const std::string& id : ids) {
    auto run = [&](TestServer& server) {
      return std::async(std::launch::async,
                        [&server, id] { return RunTurn(server.stub(), id, "race", 2).status; });
    };
    auto from_a = run(a);
    auto from_b = run(b);
    const grpc::Status sa = from_a.get(), sb = from_b.get();
    both += sa.ok() && sb.ok();
    one += sa.ok() != sb.ok();
    for (const grpc::Status& status : {sa, sb}) {
      EXPECT_TRUE(status.ok() || status.error_code() == grpc::StatusCode::ABORTED ||
                  status.error_code() == grpc::StatusCode::NOT_FOUND)
          << status.error_code() << " " << status.error_message();
    }
  }
  EXPECT_EQ(both, 0) << "two servers restored one session";
  EXPECT_EQ(one, kSessions);
}

TEST(SessionStoreTest, CloseAndTtlRemoveFiles) {
  TempDir dir;
  server::ServerOptions options = StoreOptions(dir.path());
  options.scheduler.session_limits.max_sessions = 1;
  options.session_store_ttl = std::chrono::milliseconds(2000);
  TestServer server(options);
  const std::string closed = SpilledSession(server);
  grpc::ClientContext context;
  v1::CloseSessionRequest close;
  close.set_session_id(closed);
  v1::Session info;
  ASSERT_TRUE(server.stub().CloseSession(&context, close, &info).ok());
  EXPECT_EQ(info.location(), v1::SESSION_LOCATION_STORE);
  EXPECT_FALSE(fs::exists(SessionFile(dir.path(), closed)));
  EXPECT_EQ(RunTurn(server.stub(), closed, "x", 1).status.error_code(),
            grpc::StatusCode::NOT_FOUND);

  const std::string expiring = SpilledSession(server);
  ASSERT_TRUE(fs::exists(SessionFile(dir.path(), expiring)));
  EXPECT_TRUE(WaitFor([&] { return !fs::exists(SessionFile(dir.path(), expiring)); },
                      std::chrono::seconds(10)));
}

}  // namespace
}  // namespace sinkserve::testing
