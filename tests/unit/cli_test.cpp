// End-to-end tests of the `sinkserve` program: real processes, real files on disk.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "engine/format/safetensors.h"
#include "engine/model.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/unit/test_util.h"

namespace sinkserve {
namespace {

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};

// Runs `sinkserve ARGS` through the shell, capturing stdout and stderr.
RunResult RunSinkserve(const std::string& args) {
  testing::TempDir dir;
  const std::string command = std::string(SINKSERVE_BINARY_DIR) + "/server/sinkserve " + args +
                              " >" + dir.File("out") + " 2>" + dir.File("err");
  const int status = std::system(command.c_str());
  RunResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.out = testing::ReadTextFile(dir.File("out"));
  result.err = testing::ReadTextFile(dir.File("err"));
  return result;
}

std::string Fixture(const std::string& model) { return testing::FixturePath("models/" + model); }

TEST(CliTest, PerplexityJsonMatchesHuggingFaceNll) {
  for (const std::string model : {"pythia_f32_d64", "seq_f16_d80_sharded"}) {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> reference =
        SafetensorsFile::Open(Fixture(model) + "/reference.safetensors");
    ASSERT_TRUE(reference.ok()) << reference.status();
    const TensorInfo* tokens = (*reference)->Find("tokens.2");
    const TensorInfo* nll = (*reference)->Find("reference_nll.2");
    ASSERT_NE(tokens, nullptr);
    ASSERT_NE(nll, nullptr);
    std::vector<int64_t> ids(tokens->numel());
    std::memcpy(ids.data(), tokens->data, tokens->nbytes);
    std::vector<float> expected(nll->numel());
    std::memcpy(expected.data(), nll->data, nll->nbytes);

    testing::TempDir dir;
    std::string text;
    for (int64_t id : ids) text += std::to_string(id) + (id % 3 ? " " : "\n");
    testing::WriteTextFile(dir.File("ids.txt"), text);
    const RunResult result = RunSinkserve("perplexity --model " + Fixture(model) +
                                          " --token-ids-file " + dir.File("ids.txt") + " --json");
    ASSERT_EQ(result.exit_code, 0) << result.err;
    const nlohmann::json out = nlohmann::json::parse(result.out);
    ASSERT_EQ(out["tokens"].get<size_t>(), ids.size());
    const std::vector<double> token_nll = out["token_nll"];
    ASSERT_EQ(token_nll.size(), expected.size());
    double sum = 0;
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_NEAR(token_nll[i], expected[i], 4e-4) << model << " token " << i + 1;
      sum += token_nll[i];
    }
    EXPECT_NEAR(out["nll_mean"].get<double>(), sum / expected.size(), 1e-9);
    EXPECT_NEAR(out["ppl"].get<double>(), std::exp(sum / expected.size()), 1e-6);

    // The seed's chunk protocol: chunk 50 → two independent chunks of 49 scored tokens; the
    // first chunk's NLLs are HF's (positions depend only on earlier tokens).
    const RunResult chunked =
        RunSinkserve("perplexity --model " + Fixture(model) + " --token-ids-file " +
                     dir.File("ids.txt") + " --json --chunk-protocol 50");
    ASSERT_EQ(chunked.exit_code, 0) << chunked.err;
    const std::vector<double> chunk_nll = nlohmann::json::parse(chunked.out)["token_nll"];
    ASSERT_EQ(chunk_nll.size(), 98u);
    for (size_t i = 0; i < 49; ++i) EXPECT_NEAR(chunk_nll[i], expected[i], 4e-4) << i;

    // --max-tokens N scores the first N tokens only.
    const RunResult cut =
        RunSinkserve("perplexity --model " + Fixture(model) + " --token-ids-file " +
                     dir.File("ids.txt") + " --json --max-tokens 10");
    ASSERT_EQ(cut.exit_code, 0) << cut.err;
    EXPECT_EQ(nlohmann::json::parse(cut.out)["token_nll"].size(), 9u);
  }
}

// --sink/--window select the streaming cache; the NLLs are the StreamingLLM reference's.
TEST(CliTest, PerplexityWithStreamingCacheMatchesReference) {
  const std::string model = "pythia_f32_d64";
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> reference =
      SafetensorsFile::Open(Fixture(model) + "/streaming.safetensors");
  ASSERT_TRUE(reference.ok()) << reference.status();
  const TensorInfo* tokens = (*reference)->Find("tokens");
  std::vector<int64_t> ids(tokens->numel());
  std::memcpy(ids.data(), tokens->data, tokens->nbytes);
  testing::TempDir dir;
  std::string text;
  for (int64_t id : ids) text += std::to_string(id) + " ";
  testing::WriteTextFile(dir.File("ids.txt"), text);
  for (const auto& [flags, tensor] : std::vector<std::pair<std::string, std::string>>{
           {"--sink 4 --window 16", "stream.S4_W16.nll"},
           {"--sink 0 --window 16", "stream.S0_W16.nll"},
           {"--sink 1 --window 7", "stream.S1_W7.nll"}}) {
    const TensorInfo* nll = (*reference)->Find(tensor);
    ASSERT_NE(nll, nullptr) << tensor;
    std::vector<float> expected(nll->numel());
    std::memcpy(expected.data(), nll->data, nll->nbytes);
    const RunResult result =
        RunSinkserve("perplexity --model " + Fixture(model) + " --token-ids-file " +
                     dir.File("ids.txt") + " --json " + flags);
    ASSERT_EQ(result.exit_code, 0) << result.err;
    const std::vector<double> token_nll = nlohmann::json::parse(result.out)["token_nll"];
    ASSERT_EQ(token_nll.size(), expected.size());
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_NEAR(token_nll[i], expected[i], 4e-4) << flags << " token " << i + 1;
    }
  }
  const RunResult bad = RunSinkserve("perplexity --model " + Fixture(model) + " --token-ids-file " +
                                     dir.File("ids.txt") + " --window 0");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("--window"), std::string::npos) << bad.err;
}

// --quant nf4 --json: the weights' exact bytes (those of the model loaded the same way in
// process, under a third of the F32 checkpoint's) and the peak RSS; bad combinations of the
// quant, CUDA, --cpu-isa and --cpu-activations flags are refused naming the flag.
TEST(CliTest, QuantizedPerplexityJsonReportsWeightsBytes) {
  const std::string model = Fixture("pythia_f32_d64");
  testing::TempDir dir;
  testing::WriteTextFile(dir.File("ids.txt"), "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16");
  const std::string command =
      "perplexity --model " + model + " --token-ids-file " + dir.File("ids.txt") + " --json";
  const RunResult stored = RunSinkserve(command);
  ASSERT_EQ(stored.exit_code, 0) << stored.err;
  const uint64_t stored_bytes = nlohmann::json::parse(stored.out)["weights_bytes"];

  for (const auto& [flags, double_quant] :
       {std::pair<std::string, bool>{"--quant nf4", false}, {"--quant nf4 --double-quant", true}}) {
    const RunResult nf4 = RunSinkserve(command + " " + flags);
    ASSERT_EQ(nf4.exit_code, 0) << nf4.err;
    const nlohmann::json out = nlohmann::json::parse(nf4.out);
    ModelOptions options{model, 1};
    options.quant = WeightFormat::kNf4;
    options.double_quant = double_quant;
    absl::StatusOr<std::unique_ptr<Model>> loaded = Model::Load(options);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(out["weights_bytes"].get<uint64_t>(), (*loaded)->weights_bytes()) << flags;
    EXPECT_LT(out["weights_bytes"].get<uint64_t>(), stored_bytes / 3) << flags;
    EXPECT_GT(out["peak_rss_bytes"].get<uint64_t>(), out["weights_bytes"].get<uint64_t>());
    EXPECT_NE(out["weights"].get<std::string>().find("nf4"), std::string::npos) << out["weights"];
    EXPECT_NE(nf4.err.find("weights_bytes"), std::string::npos) << nf4.err;  // the banner
    EXPECT_NE(nf4.err.find("peak RSS"), std::string::npos) << nf4.err;
  }

  for (const auto& [flags, named] : std::vector<std::pair<std::string, std::string>>{
           {"--quant int4", "--quant"},
           {"--double-quant", "--double-quant"},
           {"--quant int8 --double-quant", "--double-quant"},
           {"--quant fp16 --quantize-embeddings", "--quantize-embeddings"},
           {"--backend cpu --cuda-graphs=false", "--cuda-graphs"},
           {"--backend cpu --cuda-programmatic-launch", "--cuda-programmatic-launch"},
           {"--backend cuda --cpu-isa avx2", "--cpu-isa"},
           {"--backend cpu --cpu-isa avx-512", "--cpu-isa"},
           {"--backend cuda --cpu-activations int8", "--cpu-activations"},
           {"--backend cpu --cpu-activations int4", "--cpu-activations"}}) {
    const RunResult bad = RunSinkserve(command + " " + flags);
    EXPECT_EQ(bad.exit_code, 1) << flags;
    EXPECT_NE(bad.err.find(named), std::string::npos) << flags << ": " << bad.err;
  }
  const RunResult help = RunSinkserve("generate --help");
  for (const char* flag : {"--quant", "--double-quant", "--quantize-embeddings", "--cuda-graphs",
                           "--cuda-programmatic-launch", "--cpu-isa", "--cpu-activations"}) {
    EXPECT_NE(help.out.find(flag), std::string::npos) << flag;
  }
  // --cpu-isa portable runs anywhere; the banner and --json name the kernels that ran.
  const RunResult portable = RunSinkserve(command + " --backend cpu --cpu-isa portable");
  ASSERT_EQ(portable.exit_code, 0) << portable.err;
  EXPECT_NE(portable.err.find("portable)"), std::string::npos) << portable.err;
  EXPECT_NE(nlohmann::json::parse(portable.out)["backend"].get<std::string>().find("portable"),
            std::string::npos)
      << portable.out;
  // --cpu-activations int8: the banner and --json say so.
  const RunResult int8 = RunSinkserve(command + " --quant nf4 --cpu-activations int8");
  ASSERT_EQ(int8.exit_code, 0) << int8.err;
  EXPECT_NE(int8.err.find("int8 activations)"), std::string::npos) << int8.err;
  EXPECT_NE(nlohmann::json::parse(int8.out)["backend"].get<std::string>().find("int8 activations"),
            std::string::npos)
      << int8.out;
  // With --backend auto the CUDA flags are accepted (and unused where no GPU is present).
  const RunResult automatic = RunSinkserve(command + " --backend auto --cuda-graphs=false");
  EXPECT_EQ(automatic.exit_code, 0) << automatic.err;
}

TEST(CliTest, GenerateOnTheDemoModelSaysItIsADemo) {
  const RunResult result = RunSinkserve("generate --prompt 'Hello' --max-new-tokens 16 --seed 3");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.err.find("DEMO"), std::string::npos) << result.err;
  EXPECT_FALSE(result.out.empty());
  // Same seed, same text; greedy too.
  EXPECT_EQ(RunSinkserve("generate --prompt 'Hello' --max-new-tokens 16 --seed 3").out, result.out);
  const RunResult greedy =
      RunSinkserve("generate --prompt 'Hello' --max-new-tokens 8 --temperature 0");
  ASSERT_EQ(greedy.exit_code, 0) << greedy.err;
}

TEST(CliTest, GenerateJsonHasTheIdsTextAndTimings) {
  const std::string args =
      "generate --prompt 'Hello there' --max-new-tokens 12 --temperature 0 "
      "--ignore-eos --threads 1";
  const RunResult plain = RunSinkserve(args);
  const RunResult result = RunSinkserve(args + " --json");
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const nlohmann::json out = nlohmann::json::parse(result.out);
  EXPECT_EQ(out["ids"].size(), 12u);
  EXPECT_EQ(out["text"].get<std::string>() + "\n", plain.out);  // greedy: the same continuation
  EXPECT_EQ(out["finish_reason"], "length");
  testing::TempDir dir;
  testing::WriteTextFile(dir.File("prompt.txt"), "Hello there");
  const RunResult tokenized =
      RunSinkserve("tokenize --model demo --text-file " + dir.File("prompt.txt") + " --json");
  ASSERT_EQ(tokenized.exit_code, 0) << tokenized.err;
  EXPECT_EQ(out["prompt_ids"], nlohmann::json::parse(tokenized.out)["ids"]);
  EXPECT_NE(out["backend"].get<std::string>().find("cpu (1 thread"), std::string::npos)
      << out["backend"];
  const double prefill_ms = out["prefill_ms"], ttft_ms = out["ttft_ms"], tpot_ms = out["tpot_ms"];
  EXPECT_GT(prefill_ms, 0);
  EXPECT_GE(ttft_ms, prefill_ms);
  EXPECT_GT(tpot_ms, 0);
  EXPECT_NEAR(out["decode_tok_s"].get<double>() * tpot_ms, 1e3, 1e-6);
  EXPECT_NEAR(out["prefill_tok_s"].get<double>() * prefill_ms,
              1e3 * static_cast<double>(out["prompt_ids"].size()), 1e-6);
}

TEST(CliTest, TokenizeJsonUsesTheModelsTokenizer) {
  testing::TempDir dir;
  const std::string tokenizer = testing::DataPath("tokenizer/tokenizer.json");
  std::filesystem::create_symlink(tokenizer, dir.File("tokenizer.json"));
  const std::string text = "Streaming LLMs keep 4 attention sinks.\n\n  Ça marche — ok?";
  testing::WriteTextFile(dir.File("text.txt"), text);
  const RunResult result = RunSinkserve("tokenize --model " + dir.path() + " --text-file " +
                                        dir.File("text.txt") + " --json");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  absl::StatusOr<std::unique_ptr<Tokenizer>> reference = Tokenizer::FromFile(tokenizer);
  ASSERT_TRUE(reference.ok());
  const std::vector<int32_t> ids = nlohmann::json::parse(result.out)["ids"];
  EXPECT_EQ(ids, *(*reference)->Encode(text));
}

TEST(CliTest, ErrorsAreClearAndExitNonZero) {
  RunResult result = RunSinkserve("generate --no-such-flag 1");
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("--no-such-flag"), std::string::npos) << result.err;

  result = RunSinkserve("generate --max-new-tokens lots");
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("--max-new-tokens"), std::string::npos) << result.err;

  result = RunSinkserve("perplexity --model /nonexistent/model --token-ids-file /dev/null");
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find("/nonexistent/model"), std::string::npos) << result.err;

  // A fixture checkpoint has no tokenizer.json: text input says what to do.
  result = RunSinkserve("generate --model " + Fixture("pythia_f32_d64") + " --prompt hi");
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find("tokenizer.json"), std::string::npos) << result.err;

  result = RunSinkserve("frobnicate");
  EXPECT_EQ(result.exit_code, 2);
  result = RunSinkserve("generate --help");
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_NE(result.out.find("--max-new-tokens"), std::string::npos);
}

TEST(CliTest, TruncatedCheckpointIsRefusedNamingTheFile) {
  testing::TempDir dir;
  for (const auto& entry : std::filesystem::directory_iterator(Fixture("pythia_f32_d64"))) {
    std::filesystem::copy(entry.path(), dir.File(entry.path().filename().string()));
  }
  const std::string weights = dir.File("model.safetensors");
  std::filesystem::resize_file(weights, std::filesystem::file_size(weights) / 2);
  testing::WriteTextFile(dir.File("ids.txt"), "1 2 3");
  const RunResult result =
      RunSinkserve("perplexity --model " + dir.path() + " --token-ids-file " + dir.File("ids.txt"));
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find("model.safetensors"), std::string::npos) << result.err;
}

// sinkserve convert against torch: the safetensors it writes from torch.save's .bin shards hold
// what torch.load reads (tests/fixtures/torch_bin/<model>/reference.safetensors).
TEST(CliTest, ConvertWritesTheTensorsTorchLoads) {
  namespace fs = std::filesystem;
  const std::string source = testing::FixturePath("torch_bin/f16_sharded");
  testing::TempDir out;
  RunResult result = RunSinkserve("convert " + source + " --out " + out.path());
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_TRUE(fs::exists(out.File("config.json")));
  auto written = SafetensorsFile::Open(out.File("model.safetensors"));
  auto reference = SafetensorsFile::Open(source + "/reference.safetensors");
  ASSERT_TRUE(written.ok()) << written.status();
  ASSERT_TRUE(reference.ok()) << reference.status();
  ASSERT_EQ((*written)->tensors().size(), (*reference)->tensors().size());
  for (const TensorInfo& expected : (*reference)->tensors()) {
    const TensorInfo* actual = (*written)->Find(expected.name);
    ASSERT_NE(actual, nullptr) << expected.name;
    EXPECT_EQ(actual->dtype, expected.dtype) << expected.name;
    EXPECT_EQ(actual->shape, expected.shape) << expected.name;
    ASSERT_EQ(actual->nbytes, expected.nbytes) << expected.name;
    EXPECT_EQ(std::memcmp(actual->data, expected.data, expected.nbytes), 0) << expected.name;
  }
  // The converted directory is a model: the same NLL as the .bin directory it came from.
  testing::TempDir ids;
  testing::WriteTextFile(ids.File("ids.txt"), "5 9 1 33 2 60 7");
  const std::string perplexity = "perplexity --json --token-ids-file " + ids.File("ids.txt");
  const RunResult from_bin = RunSinkserve(perplexity + " --model " + source);
  const RunResult converted = RunSinkserve(perplexity + " --model " + out.path());
  ASSERT_EQ(from_bin.exit_code, 0) << from_bin.err;
  ASSERT_EQ(converted.exit_code, 0) << converted.err;
  EXPECT_EQ(nlohmann::json::parse(from_bin.out)["token_nll"],
            nlohmann::json::parse(converted.out)["token_nll"]);

  // In place (no --out): model.safetensors beside the .bin; a second run has nothing to do.
  testing::TempDir copy;
  for (const auto& entry : fs::directory_iterator(testing::FixturePath("torch_bin/pythia_f32"))) {
    fs::copy(entry.path(), copy.File(entry.path().filename().string()));
  }
  result = RunSinkserve("convert " + copy.path());
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_TRUE(fs::exists(copy.File("model.safetensors")));
  result = RunSinkserve("convert " + copy.path());
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find("nothing to convert"), std::string::npos) << result.err;

  // A pickle that would run a command is refused, naming the global; nothing is written.
  testing::TempDir evil;
  fs::copy(copy.File("config.json"), evil.File("config.json"));
  fs::copy(testing::FixturePath("torch_bin/bad/posix_system.bin"), evil.File("pytorch_model.bin"));
  result = RunSinkserve("convert " + evil.path());
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find("posix.system"), std::string::npos) << result.err;
  EXPECT_FALSE(fs::exists(evil.File("model.safetensors")));
}

}  // namespace
}  // namespace sinkserve
