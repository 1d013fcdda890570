#include "engine/session.h"

#include <gtest/gtest.h>

#include <random>

#include "engine/model.h"
#include "tests/unit/test_util.h"

namespace sinkserve {
namespace {

class SessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Model>> model =
        Model::Load(ModelOptions{testing::FixturePath("models/pythia_f32_d64"), 2});
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    rng_.seed(testing::TestSeed());
  }
  std::vector<int32_t> RandomTokens(size_t n) {
    std::vector<int32_t> tokens(n);
    for (int32_t& token : tokens) token = static_cast<int32_t>(rng_() % model_->config().vocab_size);
    return tokens;
  }

  std::unique_ptr<Model> model_;
  std::mt19937_64 rng_;
};

// Turn after turn appends to one stream: the logits equal feeding everything at once.
TEST_F(SessionTest, ContinuingAppendsToTheSameStream) {
  SessionStore store(model_->backend());
  SessionOptions options;
  options.policy.sink_tokens = 4;
  options.policy.window_tokens = 16;  // the turns overflow it: evictions across turns
  absl::StatusOr<Session*> chat = store.Create(options);
  absl::StatusOr<Session*> whole = store.Create(options);
  ASSERT_TRUE(chat.ok() && whole.ok());
  std::vector<float> chat_logits(model_->config().vocab_size), whole_logits(chat_logits.size());
  std::vector<int32_t> all;
  for (int turn = 0; turn < 4; ++turn) {
    const std::vector<int32_t> prompt = RandomTokens(3 + rng_() % 12);
    ASSERT_TRUE((*chat)->Feed(model_->backend(), prompt, chat_logits).ok());
    all.insert(all.end(), prompt.begin(), prompt.end());
  }
  ASSERT_TRUE((*whole)->Feed(model_->backend(), all, whole_logits).ok());
  EXPECT_EQ(chat_logits, whole_logits);
  EXPECT_EQ((*chat)->cache().tokens_seen(), static_cast<int64_t>(all.size()));
  EXPECT_LE((*chat)->cache().tokens_cached(), 20);
  EXPECT_EQ(std::vector<int32_t>((*chat)->history().begin(), (*chat)->history().end()), all);
}

TEST_F(SessionTest, DestroyedMemoryIsReused) {
  SessionStore store(model_->backend());
  SessionOptions options;
  absl::StatusOr<Session*> first = store.Create(options);
  ASSERT_TRUE(first.ok());
  std::vector<float> logits(model_->config().vocab_size);
  ASSERT_TRUE((*first)->Feed(model_->backend(), RandomTokens(10), logits).ok());
  const KvCache* memory = &(*first)->cache();
  const uint64_t id = (*first)->id();
  const uint64_t bytes = store.cache_bytes();
  ASSERT_TRUE(store.Destroy(id).ok());
  EXPECT_EQ(store.Find(id), nullptr);
  EXPECT_EQ(store.Destroy(id).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store.free_cache_bytes(), bytes);
  absl::StatusOr<Session*> second = store.Create(options);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(&(*second)->cache(), memory);  // the same memory, reset
  EXPECT_EQ((*second)->cache().tokens_seen(), 0);
  EXPECT_NE((*second)->id(), id);
  EXPECT_EQ(store.free_cache_bytes(), 0u);
}

TEST_F(SessionTest, BadOptionsNameTheField) {
  SessionStore store(model_->backend());
  SessionOptions options;
  options.policy.window_tokens = 0;
  absl::StatusOr<Session*> session = store.Create(options);
  ASSERT_FALSE(session.ok());
  EXPECT_NE(session.status().message().find("window_tokens"), std::string::npos);
  options = {};
  options.sampling.top_p = 2;
  session = store.Create(options);
  ASSERT_FALSE(session.ok());
  EXPECT_NE(session.status().message().find("top_p"), std::string::npos);
  EXPECT_EQ(store.size(), 0u);
}

TEST_F(SessionTest, HistoryIsBoundedAndResetForgets) {
  SessionStore store(model_->backend());
  SessionOptions options;
  options.history_limit_tokens = 8;
  absl::StatusOr<Session*> session = store.Create(options);
  ASSERT_TRUE(session.ok());
  std::vector<float> logits(model_->config().vocab_size);
  const std::vector<int32_t> tokens = RandomTokens(30);
  ASSERT_TRUE((*session)->Feed(model_->backend(), tokens, logits).ok());
  EXPECT_EQ(std::vector<int32_t>((*session)->history().begin(), (*session)->history().end()),
            std::vector<int32_t>(tokens.end() - 8, tokens.end()));
  (*session)->Reset();
  EXPECT_TRUE((*session)->history().empty());
  EXPECT_EQ((*session)->cache().tokens_cached(), 0);
}

}  // namespace
}  // namespace sinkserve
