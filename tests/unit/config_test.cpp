#include "engine/format/config.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/unit/test_util.h"

namespace sinkserve {
namespace {

// The config.json of EleutherAI/pythia-2.8b as published (fields the engine reads).
constexpr char kPythia28b[] = R"({
  "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0,
  "hidden_act": "gelu", "hidden_size": 2560, "initializer_range": 0.02,
  "intermediate_size": 10240, "layer_norm_eps": 1e-05, "max_position_embeddings": 2048,
  "model_type": "gpt_neox", "num_attention_heads": 32, "num_hidden_layers": 32,
  "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": false,
  "torch_dtype": "float16", "transformers_version": "4.24.0", "use_cache": true,
  "use_parallel_residual": true, "vocab_size": 50304})";

TEST(ConfigTest, ParsesPythia28b) {
  absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(kPythia28b, "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->hidden_size, 2560);
  EXPECT_EQ(config->num_layers, 32);
  EXPECT_EQ(config->num_heads, 32);
  EXPECT_EQ(config->head_dim, 80);
  EXPECT_EQ(config->rotary_ndims, 20);
  EXPECT_EQ(config->intermediate_size, 10240);
  EXPECT_EQ(config->vocab_size, 50304);
  EXPECT_TRUE(config->parallel_residual);
  EXPECT_FALSE(config->tie_word_embeddings);
  EXPECT_TRUE(config->attention_bias);
  EXPECT_EQ(config->activation, Activation::kActivationGeluErf);
  EXPECT_FLOAT_EQ(config->layer_norm_eps, 1e-5f);
  // docs/numerics.md: 2,775,208,960 parameters.
  EXPECT_EQ(config->ParameterCount(), 2775208960);
}

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return text.replace(at, from.size(), to);
}

TEST(ConfigTest, RejectsOtherArchitectures) {
  std::string llama = Replace(Replace(kPythia28b, "\"gpt_neox\"", "\"llama\""),
                              "GPTNeoXForCausalLM", "LlamaForCausalLM");
  absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(llama, "dir/config.json");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(config.status().message().find("dir/config.json"), std::string::npos);
  EXPECT_NE(config.status().message().find("llama"), std::string::npos);
}

// Every bad field gives an error naming the field (never a crash or a silent default).
TEST(ConfigTest, NamesTheBadField) {
  struct Case {
    std::string from, to, field;
  };
  const Case cases[] = {
      {"\"hidden_size\": 2560", "\"hidden_size\": \"big\"", "hidden_size"},
      {"\"hidden_size\": 2560", "\"hidden_size\": -1", "hidden_size"},
      {"\"num_attention_heads\": 32", "\"num_attention_heads\": 7", "num_attention_heads"},
      {"\"rotary_pct\": 0.25", "\"rotary_pct\": 1.5", "rotary_pct"},
      {"\"rotary_pct\": 0.25", "\"rotary_pct\": 0.0125", "rotary_pct"},  // 1 dim: odd
      {"\"hidden_act\": \"gelu\"", "\"hidden_act\": \"relu\"", "hidden_act"},
      {"\"layer_norm_eps\": 1e-05", "\"layer_norm_eps\": -1", "layer_norm_eps"},
      {"\"vocab_size\": 50304", "\"vocab_size\": 0", "vocab_size"},
      {"\"use_parallel_residual\": true", "\"use_parallel_residual\": 3",
       "use_parallel_residual"},
      {"\"use_cache\": true", "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}",
       "rope_scaling"},
      {"\"num_hidden_layers\": 32,", "", "num_hidden_layers"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<ModelConfig> config =
        ModelConfig::FromJson(Replace(kPythia28b, c.from, c.to), "config.json");
    ASSERT_FALSE(config.ok()) << c.to;
    EXPECT_NE(config.status().message().find(c.field), std::string::npos)
        << c.to << " -> " << config.status();
  }
}

// config.json is untrusted input, parsed by the strict parser (common/base/strict_json.h): a key
// written twice is refused (readers disagree on which one counts), and so are a BOM, a NUL,
// invalid UTF-8 and nesting past 64 levels. Errors name the file and the key.
TEST(ConfigTest, RefusesWhatTheStrictParserRefuses) {
  const std::string pythia(kPythia28b);
  struct Case {
    std::string json, expected;
  };
  const Case cases[] = {
      {Replace(pythia, "\"rotary_pct\": 0.25", "\"rotary_pct\": 0.25, \"rotary_pct\": 1.0"),
       "config.json: duplicate key 'rotary_pct'"},
      {Replace(pythia, "\"use_cache\": true",
               "\"rope_parameters\": {\"rope_theta\": 1e4, \"rope_theta\": 1e6}"),
       "config.json: duplicate key 'rope_theta' in 'rope_parameters'"},
      {"\xEF\xBB\xBF" + pythia, "config.json: JSON starts with a byte order mark"},
      {pythia + std::string(1, '\0'), "config.json: JSON contains a NUL byte"},
      {Replace(pythia, "float16", "float\xC0\xAF"), "config.json: invalid UTF-8"},
      {Replace(pythia, "\"use_cache\": true",
               "\"x\": " + std::string(64, '[') + std::string(64, ']')),
       "config.json: JSON nests deeper than 64 levels (at 'x"},
      {Replace(pythia, "\"use_cache\": true", "\"use_cache\": tru"),
       "config.json: invalid JSON at byte"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(c.json, "config.json");
    ASSERT_FALSE(config.ok()) << c.expected;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
    EXPECT_EQ(config.status().message().rfind(c.expected, 0), 0u) << config.status();
  }
  // 64 levels are within the cap: the root object and 63 arrays.
  EXPECT_TRUE(
      ModelConfig::FromJson(Replace(pythia, "\"use_cache\": true",
                                    "\"x\": " + std::string(63, '[') + std::string(63, ']')),
                            "config.json")
          .ok());
}

// The configs transformers wrote for the fixture checkpoints pass the strict parser.
TEST(ConfigTest, ReadsEveryFixtureConfig) {
  const std::vector<std::string> names = testing::FixtureModelNames();
  ASSERT_FALSE(names.empty());
  for (const std::string& name : names) {
    const std::string path = testing::FixturePath("models/" + name + "/config.json");
    EXPECT_TRUE(ModelConfig::FromFile(path).ok()) << ModelConfig::FromFile(path).status();
  }
}

TEST(ConfigTest, OptionalFieldsAndVariants) {
  std::string text = Replace(kPythia28b, "\"hidden_act\": \"gelu\"", "\"hidden_act\": \"gelu_new\"");
  text = Replace(text, "\"rotary_emb_base\": 10000", "\"rope_theta\": 500");
  text = Replace(text, "\"use_cache\": true", "\"attention_bias\": false");
  absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(text, "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->activation, Activation::kActivationGeluTanh);
  EXPECT_DOUBLE_EQ(config->rotary_base, 500.0);
  EXPECT_FALSE(config->attention_bias);
}

TEST(ConfigTest, NotJson) {
  for (const char* text : {"", "{", "[1, 2]", "null", "{\"model_type\": \"gpt_neox\"}"}) {
    EXPECT_FALSE(ModelConfig::FromJson(text, "config.json").ok()) << text;
  }
  EXPECT_EQ(ModelConfig::FromFile("/nonexistent/config.json").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace sinkserve

namespace sinkserve {
namespace {

// transformers 5 writes rope_parameters instead of rotary_pct / rotary_emb_base.
TEST(ConfigTest, Transformers5RopeParameters) {
  std::string text = Replace(kPythia28b, "\"rotary_emb_base\": 10000, \"rotary_pct\": 0.25,",
                             "\"rope_parameters\": {\"partial_rotary_factor\": 0.5, "
                             "\"rope_theta\": 1000, \"rope_type\": \"default\"},");
  absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(text, "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->rotary_ndims, 40);
  EXPECT_DOUBLE_EQ(config->rotary_base, 1000.0);
  const std::string yarn = Replace(text, "\"default\"", "\"yarn\"");
  absl::StatusOr<ModelConfig> rejected = ModelConfig::FromJson(yarn, "config.json");
  ASSERT_FALSE(rejected.ok());
  EXPECT_NE(rejected.status().message().find("rope_type"), std::string::npos);
}

}  // namespace
}  // namespace sinkserve

namespace sinkserve {
namespace {

// Found by config_fuzz: a model_type that is not a string threw out of the JSON library.
TEST(ConfigRegressionTest, NonStringModelTypeIsAnErrorNotACrash) {
  for (const char* text : {R"({"model_type": null})", R"({"model_type": 7})",
                           R"({"model_type": ["gpt_neox"]})"}) {
    const absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(text, "config.json");
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
}

}  // namespace
}  // namespace sinkserve
