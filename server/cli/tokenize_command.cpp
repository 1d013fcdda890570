// sinkserve tokenize: print the token ids of a text.
#include <cstdio>

#include "engine/format/model_directory.h"
#include "nlohmann/json.hpp"
#include "server/cli/commands.h"
#include "common/cli/command.h"
#include "server/cli/model_flags.h"
#include "common/base/file.h"

namespace sinkserve::cli {

int RunTokenize(int argc, char** argv) {
  std::string model_path = "demo", text_file, text;
  bool json = false;
  Flags flags("tokenize", "Prints the token ids of a text, one line of space-separated ids.");
  flags.Add("model", &model_path, "checkpoint directory holding tokenizer.json, or demo");
  flags.Add("text-file", &text_file, "file whose whole contents are tokenized");
  flags.Add("text", &text, "text given inline (instead of --text-file)");
  flags.Add("json", &json, "print {\"ids\":[...]} instead");
  if (int code = ParseFlagsOrExit(flags, argc, argv); code >= 0) return code;
  if (flags.was_set("text-file") == flags.was_set("text")) {
    return Fail(absl::InvalidArgumentError("give exactly one of --text-file or --text"));
  }
  if (!text_file.empty()) {
    absl::StatusOr<std::string> contents = ReadFile(text_file);
    if (!contents.ok()) return Fail(contents.status());
    text = std::move(*contents);
  }

  // Only the tokenizer is needed: load it alone when the directory has one, so tokenizing
  // does not map gigabytes of weights.
  std::unique_ptr<Tokenizer> owned;
  const Tokenizer* tokenizer = nullptr;
  std::unique_ptr<Model> model;
  if (model_path == "demo") {
    owned = Tokenizer::ByteLevelDemo();
    tokenizer = owned.get();
  } else {
    absl::StatusOr<ModelDirectory> directory = ResolveModelDirectory(model_path);
    if (!directory.ok()) return Fail(directory.status());
    absl::StatusOr<std::unique_ptr<Tokenizer>> loaded =
        Tokenizer::FromFile(directory->path + "/tokenizer.json");
    if (!loaded.ok()) return Fail(loaded.status());
    owned = std::move(*loaded);
    tokenizer = owned.get();
  }
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(text);
  if (!ids.ok()) return Fail(ids.status());
  if (json) {
    std::puts(nlohmann::json{{"ids", *ids}}.dump().c_str());
  } else {
    std::string line;
    for (size_t i = 0; i < ids->size(); ++i) {
      if (i > 0) line += ' ';
      line += std::to_string((*ids)[i]);
    }
    std::puts(line.c_str());
  }
  return kExitOk;
}

}  // namespace sinkserve::cli
