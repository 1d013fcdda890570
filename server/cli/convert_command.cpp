// sinkserve convert: a model directory's weights (pytorch_model.bin, its shards, or sharded
// safetensors) written as one model.safetensors, with config.json and the tokenizer files.
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/format/model_directory.h"
#include "engine/format/safetensors.h"
#include "common/cli/command.h"
#include "server/cli/commands.h"
#include "server/cli/model_flags.h"

namespace sinkserve::cli {
namespace {

namespace fs = std::filesystem;

// What a Hugging Face model directory holds besides the weights, copied as they are.
constexpr const char* kSideFiles[] = {
    "config.json",          "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "vocab.json",          "merges.txt",     "added_tokens.json",
};

absl::Status Convert(const std::string& path, std::string out, bool out_given) {
  absl::StatusOr<ModelDirectory> directory = ResolveModelDirectory(path);
  if (!directory.ok()) return directory.status();
  const std::string& dir = directory->path;
  if (!out_given) {
    if (directory->hub_cache) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, " is in a Hugging Face hub cache, which sinkserve does not write into: pass "
                "--out DIR"));
    }
    out = dir;
  }
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(dir);
  if (!checkpoint.ok()) return checkpoint.status();
  std::error_code ec;
  const bool in_place = fs::equivalent(dir, out, ec);
  if (in_place && fs::exists(fs::path(dir) / "model.safetensors", ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, " already holds model.safetensors: there is nothing to convert"));
  }

  fs::create_directories(out, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", out, ": ", ec.message()));
  if (!in_place) {
    for (const char* name : kSideFiles) {
      const fs::path from = fs::path(dir) / name;
      if (!fs::exists(from, ec)) continue;
      fs::copy_file(from, fs::path(out) / name, fs::copy_options::overwrite_existing, ec);
      if (ec) {
        return absl::InternalError(
            absl::StrCat("cannot copy ", from.string(), " to ", out, ": ", ec.message()));
      }
    }
  }
  std::vector<TensorToWrite> tensors;
  uint64_t bytes = 0;
  for (const std::string& name : (*checkpoint)->names()) {
    const TensorInfo* t = (*checkpoint)->Find(name);
    tensors.push_back({name, t->dtype, t->shape, std::span(t->data, t->nbytes)});
    bytes += t->nbytes;
  }
  const std::string target = (fs::path(out) / "model.safetensors").string();
  if (absl::Status status = WriteSafetensors(target, tensors, {{"format", "pt"}}); !status.ok()) {
    return status;
  }
  std::fprintf(stderr, "sinkserve: wrote %s: %zu tensors, %.1f MB; peak RSS %.1f MB\n",
               target.c_str(), tensors.size(), bytes / 1e6, PeakRssBytes() / 1e6);
  return absl::OkStatus();
}

}  // namespace

int RunConvert(int argc, char** argv) {
  std::string model_path, out;
  Flags flags("convert",
              "Writes a model directory's weights (pytorch_model.bin, its shards, or sharded "
              "safetensors) as one model.safetensors, with config.json and the tokenizer files "
              "copied beside it. Usage: sinkserve convert DIR [--out DIR]. The pickle in a .bin "
              "is read without running it: only torch's tensor rebuild is allowed.");
  flags.Add("model", &model_path, "the model directory (or give it first, without --model)");
  flags.Add("out", &out, "directory to write; default: the model directory itself");
  // DIR may come first, as a plain argument.
  const bool positional = argc > 0 && argv[0][0] != '-';
  if (positional) model_path = argv[0];
  if (int code = ParseFlagsOrExit(flags, argc - positional, argv + positional); code >= 0) {
    return code;
  }
  if (model_path.empty() || (positional && flags.was_set("model"))) {
    return Fail(absl::InvalidArgumentError("give the model directory once: sinkserve convert DIR"));
  }
  if (absl::Status status = Convert(model_path, out, flags.was_set("out")); !status.ok()) {
    return Fail(status);
  }
  return kExitOk;
}

}  // namespace sinkserve::cli
