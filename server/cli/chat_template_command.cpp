// sinkserve chat-template: print the prompt a chat template renders for a messages file, as
// /v1/chat/completions would (server/http/chat_template.h); a way to check a template before
// serving it.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/base/file.h"
#include "common/cli/command.h"
#include "engine/format/model_directory.h"
#include "server/cli/commands.h"
#include "server/http/chat_template.h"

namespace sinkserve::cli {

int RunChatTemplate(int argc, char** argv) {
  std::string model_path, template_file, messages_file;
  Flags flags("chat-template",
              "Prints the prompt the chat template renders for --messages, byte for byte (no\n"
              "newline added), with add_generation_prompt true unless the file says otherwise.");
  flags.Add(
      "model", &model_path,
      "model directory whose chat_template.jinja or tokenizer_config.json holds the template");
  flags.Add(
      "chat-template", &template_file,
      "the template: a Jinja file, or a JSON file with a chat_template (overrides --model's)");
  flags.Add("messages", &messages_file,
            "JSON file: an array of messages, or an object of the template's variables "
            "(messages, add_generation_prompt, bos_token, eos_token, ...)");
  if (int code = ParseFlagsOrExit(flags, argc, argv); code >= 0) return code;
  if (messages_file.empty()) return Fail(absl::InvalidArgumentError("--messages is required"));
  std::string model_dir;
  if (!model_path.empty()) {
    absl::StatusOr<ModelDirectory> directory = ResolveModelDirectory(model_path);
    if (!directory.ok()) return Fail(directory.status());
    model_dir = directory->path;
  }
  absl::StatusOr<std::optional<server::http::ChatTemplate>> chat_template =
      server::http::LoadChatTemplate(model_dir, template_file);
  if (!chat_template.ok()) return Fail(chat_template.status());
  if (!*chat_template) {
    return Fail(
        absl::NotFoundError("no chat template: give --chat-template or a --model "
                            "directory with chat_template.jinja or tokenizer_config.json"));
  }
  absl::StatusOr<std::string> contents = ReadFile(messages_file);
  if (!contents.ok()) return Fail(contents.status());
  nlohmann::ordered_json variables = nlohmann::ordered_json::parse(*contents, nullptr, false);
  if (variables.is_array()) variables = {{"messages", std::move(variables)}};
  if (!variables.is_object()) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat(messages_file, ": not a JSON array of messages or an object of variables")));
  }
  if (!variables.contains("add_generation_prompt")) variables["add_generation_prompt"] = true;
  absl::StatusOr<std::string> prompt = (*chat_template)->Render(variables);
  if (!prompt.ok()) return Fail(prompt.status());
  std::fwrite(prompt->data(), 1, prompt->size(), stdout);
  return kExitOk;
}

}  // namespace sinkserve::cli
