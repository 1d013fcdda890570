// SessionTable on the demo model's real caches, with a fake clock: least-recently-used eviction
// under the session limit, idle expiry (TTL), the cache-memory limit, and the caches of closed
// sessions reused clean. The scheduler stamps `last_used` on every use; the tests do the same.
#include "engine/serving/session_table.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/model.h"
#include "tests/unit/test_util.h"

namespace sinkserve {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

class SessionTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(ModelOptions{"demo", 1});
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    const ModelConfig& config = model_->config();
    shape_ = KvShape{config.num_layers, config.num_heads, config.head_dim};
    store_ = std::make_unique<SessionStore>(model_->backend());
    options_.policy.sink_tokens = 4;
    options_.policy.window_tokens = 16;
    rng_.seed(testing::TestSeed());
  }

  // A table whose new sessions are stamped with the fake clock `now_`.
  std::unique_ptr<SessionTable> MakeTable(const SessionTable::Limits& limits) {
    return std::make_unique<SessionTable>(*store_, shape_, limits, SessionPersistence{}, nullptr,
                                          [this] { return now_; });
  }

  SessionEntry* CreateAt(SessionTable& table, SteadyClock::time_point when) {
    now_ = when;
    absl::StatusOr<SessionEntry*> entry = table.Create(options_, {});
    EXPECT_TRUE(entry.ok()) << entry.status();
    return entry.ok() ? *entry : nullptr;
  }

  // The status of looking up `id`: OK, or NOT_FOUND with the reason in the message.
  static absl::Status Lookup(SessionTable& table, const std::string& id) {
    return table.Find(id).status();
  }

  std::vector<int32_t> RandomTokens(size_t n) {
    std::vector<int32_t> tokens(n);
    for (int32_t& token : tokens) {
      token = static_cast<int32_t>(rng_() % static_cast<uint64_t>(model_->config().vocab_size));
    }
    return tokens;
  }

  std::unique_ptr<Model> model_;
  KvShape shape_;
  std::unique_ptr<SessionStore> store_;
  SessionOptions options_;
  std::mt19937_64 rng_;
  // An arbitrary origin for the fake clock: nothing in the table reads the real one.
  const SteadyClock::time_point t0_ = SteadyClock::time_point{} + std::chrono::hours(1000);
  SteadyClock::time_point now_ = t0_;
};

void ExpectGone(const absl::Status& status, const std::string& reason) {
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_NE(status.message().find(reason), std::string::npos) << status;
}

TEST_F(SessionTableTest, EvictsTheLeastRecentlyUsedIdleSessionAtTheSessionLimit) {
  auto table = MakeTable({.max_sessions = 3, .ttl = seconds(600)});
  SessionEntry* a = CreateAt(*table, t0_ + seconds(1));
  SessionEntry* b = CreateAt(*table, t0_ + seconds(2));
  SessionEntry* c = CreateAt(*table, t0_ + seconds(3));
  ASSERT_TRUE(a && b && c);
  const std::string a_id = a->id, b_id = b->id, c_id = c->id;
  a->last_used = t0_ + seconds(4);  // a request used a: b is now the least recently used

  std::vector<const SessionEntry*> order = table->MostRecentFirst();
  ASSERT_EQ(order.size(), 3u);
  EXPECT_EQ(order[0]->id, a_id);
  EXPECT_EQ(order[1]->id, c_id);
  EXPECT_EQ(order[2]->id, b_id);

  SessionEntry* d = CreateAt(*table, t0_ + seconds(5));
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(table->size(), 3u);
  ExpectGone(Lookup(*table, b_id), "evicted (least recently used)");
  EXPECT_TRUE(Lookup(*table, a_id).ok());
  EXPECT_TRUE(Lookup(*table, c_id).ok());
  EXPECT_EQ(table->MostRecentFirst().front()->id, d->id);

  // A busy session is never the victim, however old: c is the oldest idle one now.
  a->last_used = t0_;
  a->busy = true;
  ASSERT_NE(CreateAt(*table, t0_ + seconds(6)), nullptr);
  EXPECT_TRUE(Lookup(*table, a_id).ok());
  ExpectGone(Lookup(*table, c_id), "evicted");

  // Every session busy: no room, and nothing is evicted.
  for (const SessionEntry* entry : table->MostRecentFirst()) {
    ASSERT_TRUE(table->Find(entry->id).ok());
    (*table->Find(entry->id))->busy = true;
  }
  now_ = t0_ + seconds(7);
  absl::StatusOr<SessionEntry*> refused = table->Create(options_, {});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_EQ(table->size(), 3u);
  EXPECT_EQ(store_->size(), 3u);

  ExpectGone(Lookup(*table, "s_never_made"), "unknown session");
}

TEST_F(SessionTableTest, ExpiresIdleSessionsAfterTheTtl) {
  auto table = MakeTable({.max_sessions = 16, .ttl = seconds(10)});
  EXPECT_EQ(table->ExpireIdle(t0_), std::nullopt);  // empty: nothing will expire
  SessionEntry* a = CreateAt(*table, t0_);
  SessionEntry* b = CreateAt(*table, t0_ + seconds(4));
  SessionEntry* c = CreateAt(*table, t0_ + seconds(6));
  ASSERT_TRUE(a && b && c);
  const std::string a_id = a->id, b_id = b->id, c_id = c->id;
  c->busy = true;  // a request is running on c

  EXPECT_EQ(table->Info(*b, t0_ + seconds(9)).expires_in_ms, 5'000);
  EXPECT_EQ(table->Info(*c, t0_ + seconds(9)).expires_in_ms, 10'000);  // busy: a full TTL

  // Just before a's TTL: nothing goes, and the next expiry is a's.
  EXPECT_EQ(table->ExpireIdle(t0_ + seconds(10) - milliseconds(1)), t0_ + seconds(10));
  EXPECT_EQ(table->size(), 3u);
  // At a's TTL: a goes; b is next.
  EXPECT_EQ(table->ExpireIdle(t0_ + seconds(10)), t0_ + seconds(14));
  ExpectGone(Lookup(*table, a_id), "expired: idle for more than 10 s");
  EXPECT_TRUE(Lookup(*table, b_id).ok());

  // Using b pushes its expiry back.
  b->last_used = t0_ + seconds(12);
  EXPECT_EQ(table->ExpireIdle(t0_ + seconds(14)), t0_ + seconds(22));
  EXPECT_TRUE(Lookup(*table, b_id).ok());

  // Long after: b expires, busy c stays, and nothing idle is left to expire.
  EXPECT_EQ(table->ExpireIdle(t0_ + seconds(1000)), std::nullopt);
  ExpectGone(Lookup(*table, b_id), "expired");
  EXPECT_TRUE(Lookup(*table, c_id).ok());
  EXPECT_EQ(store_->size(), 1u);
  EXPECT_EQ(table->Info(*c, t0_ + seconds(1000)).expires_in_ms, 10'000);
}

TEST_F(SessionTableTest, StaysWithinTheCacheMemoryLimit) {
  const uint64_t one = CacheBytes(shape_, options_.policy);
  // Room for two caches and a half.
  auto table = MakeTable({.max_sessions = 16, .ttl = seconds(600), .max_cache_bytes = one * 5 / 2});
  SessionEntry* a = CreateAt(*table, t0_ + seconds(1));
  SessionEntry* b = CreateAt(*table, t0_ + seconds(2));
  ASSERT_TRUE(a && b);
  const std::string a_id = a->id, b_id = b->id;
  // The table's arithmetic matches the memory the backend really allocated.
  EXPECT_EQ(store_->cache_bytes(), 2 * one);

  // A third does not fit: the least recently used idle session makes room.
  SessionEntry* c = CreateAt(*table, t0_ + seconds(3));
  ASSERT_NE(c, nullptr);
  ExpectGone(Lookup(*table, a_id), "cache memory limit");
  EXPECT_TRUE(Lookup(*table, b_id).ok());
  EXPECT_EQ(store_->cache_bytes(), 2 * one);
  EXPECT_LE(store_->cache_bytes() + store_->free_cache_bytes(), one * 5 / 2);

  // A one-shot stream's cache is reserved the same way: b (older than c) goes.
  EXPECT_TRUE(table->ReserveCacheBytes(one).ok());
  ExpectGone(Lookup(*table, b_id), "cache memory limit");
  EXPECT_EQ(store_->cache_bytes() + store_->free_cache_bytes(), one);

  // Busy sessions are not evicted: with c busy, two more caches cannot fit.
  c->busy = true;
  EXPECT_EQ(table->ReserveCacheBytes(2 * one).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(Lookup(*table, c->id).ok());
  // A cache larger than the whole limit is refused outright, naming the limit.
  const absl::Status too_big = table->ReserveCacheBytes(3 * one);
  EXPECT_EQ(too_big.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(too_big.message().find("memory limit"), std::string::npos) << too_big;
}

TEST_F(SessionTableTest, ReusesTheCacheOfAClosedSessionClean) {
  auto table = MakeTable({.max_sessions = 16, .ttl = seconds(600)});
  std::vector<float> logits(model_->config().vocab_size);
  SessionEntry* first = CreateAt(*table, t0_);
  ASSERT_NE(first, nullptr);
  const std::vector<int32_t> earlier = RandomTokens(40);  // overflows the 4 + 16 window
  ASSERT_TRUE(first->session->Feed(model_->backend(), earlier, logits).ok());
  const KvCache* used_cache = &first->session->cache();
  const std::string first_id = first->id;
  table->Close(first);
  ExpectGone(Lookup(*table, first_id), "was closed");
  EXPECT_EQ(store_->cache_bytes(), 0u);
  EXPECT_EQ(store_->free_cache_bytes(), CacheBytes(shape_, options_.policy));

  // The next session of the same policy gets that cache back, emptied.
  SessionEntry* second = CreateAt(*table, t0_ + seconds(1));
  ASSERT_NE(second, nullptr);
  EXPECT_NE(second->id, first_id);
  EXPECT_EQ(&second->session->cache(), used_cache);
  EXPECT_EQ(store_->free_cache_bytes(), 0u);
  EXPECT_EQ(second->session->cache().tokens_seen(), 0);
  EXPECT_EQ(second->session->cache().tokens_cached(), 0);
  EXPECT_TRUE(second->session->history().empty());

  // Nothing of the earlier stream leaks: the reused cache gives a fresh cache's logits.
  SessionEntry* fresh = CreateAt(*table, t0_ + seconds(2));
  ASSERT_NE(fresh, nullptr);
  EXPECT_NE(&fresh->session->cache(), used_cache);
  const std::vector<int32_t> prompt = RandomTokens(24);
  std::vector<float> reused_logits(logits.size()), fresh_logits(logits.size());
  ASSERT_TRUE(second->session->Feed(model_->backend(), prompt, reused_logits).ok());
  ASSERT_TRUE(fresh->session->Feed(model_->backend(), prompt, fresh_logits).ok());
  EXPECT_EQ(reused_logits, fresh_logits);
}

}  // namespace
}  // namespace sinkserve
