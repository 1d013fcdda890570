#include "server/http/chat_template.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/file.h"
#include "server/http/jinja_render.h"
#include "server/http/jinja_syntax.h"

namespace sinkserve::server::http {

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(std::string_view source, std::string origin) {
  // As Jinja reads a template: newlines normalized to \n, one trailing newline dropped.
  std::string text;
  text.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      text += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      text += source[i];
    }
  }
  if (!text.empty() && text.back() == '\n') text.pop_back();
  ChatTemplate result;
  result.origin_ = std::move(origin);
  try {
    result.root_ = jinja::ParseTemplate(text, result.origin_);
  } catch (const jinja::TemplateError& error) {
    return absl::InvalidArgumentError(absl::StrCat("chat template ", error.message));
  }
  return result;
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& variables) const {
  jinja::Dict globals;
  for (const auto& [name, value] : defaults_.items()) {
    if (!variables.contains(name)) globals.emplace_back(name, jinja::FromJson(value));
  }
  for (const auto& [name, value] : variables.items()) {
    globals.emplace_back(name, jinja::FromJson(value));
  }
  std::string out;
  try {
    jinja::RenderTemplate(*root_, origin_, std::move(globals), &out);
  } catch (const jinja::RaisedError& error) {
    return absl::InvalidArgumentError(error.message);
  } catch (const jinja::TemplateError& error) {
    return absl::InvalidArgumentError(absl::StrCat("chat template ", error.message));
  }
  return out;
}

namespace {

// The template of LoadChatTemplate, without its defaults.
absl::StatusOr<std::optional<ChatTemplate>> FindChatTemplate(const std::string& model_dir,
                                                             const std::string& flag_file) {
  // A tokenizer_config.json-shaped file: its chat_template string, or the "default" entry of
  // the list-of-{name, template} form.
  auto from_config = [](const std::string& path,
                        const std::string& contents) -> absl::StatusOr<std::optional<std::string>> {
    const nlohmann::json config = nlohmann::json::parse(contents, nullptr, false);
    if (config.is_discarded() || !config.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
    }
    const auto it = config.find("chat_template");
    if (it == config.end() || it->is_null()) return std::optional<std::string>();
    if (it->is_string()) return std::optional<std::string>(it->get<std::string>());
    if (it->is_array()) {
      for (const nlohmann::json& entry : *it) {
        if (entry.is_object() && entry.value("name", "") == "default" &&
            entry.contains("template") && entry["template"].is_string()) {
          return std::optional<std::string>(entry["template"].get<std::string>());
        }
      }
    }
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": chat_template must be a string (or a list holding a \"default\" template)"));
  };
  auto parse = [](const std::string& source,
                  const std::string& origin) -> absl::StatusOr<std::optional<ChatTemplate>> {
    absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(source, origin);
    if (!parsed.ok()) return parsed.status();
    return std::optional<ChatTemplate>(std::move(*parsed));
  };
  if (!flag_file.empty()) {
    absl::StatusOr<std::string> contents = ReadFile(flag_file);
    if (!contents.ok()) return contents.status();
    if (flag_file.ends_with(".json")) {
      absl::StatusOr<std::optional<std::string>> source = from_config(flag_file, *contents);
      if (!source.ok()) return source.status();
      if (!*source) {
        return absl::InvalidArgumentError(absl::StrCat(flag_file, ": has no chat_template"));
      }
      return parse(**source, flag_file);
    }
    return parse(*contents, flag_file);
  }
  if (model_dir.empty()) return std::optional<ChatTemplate>();
  const std::string jinja = model_dir + "/chat_template.jinja";
  if (std::filesystem::exists(jinja)) {
    absl::StatusOr<std::string> contents = ReadFile(jinja);
    if (!contents.ok()) return contents.status();
    return parse(*contents, jinja);
  }
  const std::string config = model_dir + "/tokenizer_config.json";
  if (!std::filesystem::exists(config)) return std::optional<ChatTemplate>();
  absl::StatusOr<std::string> contents = ReadFile(config);
  if (!contents.ok()) return contents.status();
  absl::StatusOr<std::optional<std::string>> source = from_config(config, *contents);
  if (!source.ok()) return source.status();
  if (!*source) return std::optional<ChatTemplate>();
  return parse(**source, config + " chat_template");
}

// A special token of tokenizer_config.json: a string, or an AddedToken object's content.
std::string SpecialToken(const nlohmann::json& config, const char* name) {
  const auto it = config.find(name);
  if (it == config.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return "";
}

}  // namespace

absl::StatusOr<std::optional<ChatTemplate>> LoadChatTemplate(const std::string& model_dir,
                                                             const std::string& flag_file) {
  absl::StatusOr<std::optional<ChatTemplate>> found = FindChatTemplate(model_dir, flag_file);
  if (!found.ok() || !*found) return found;
  nlohmann::json config = nlohmann::json::object();
  // The special tokens of the config the template came with, else of the model's.
  const std::string config_path =
      absl::EndsWith(flag_file, ".json") ? flag_file : model_dir + "/tokenizer_config.json";
  if (config_path != "/tokenizer_config.json" && std::filesystem::exists(config_path)) {
    absl::StatusOr<std::string> contents = ReadFile(config_path);
    if (!contents.ok()) return contents.status();
    config = nlohmann::json::parse(*contents, nullptr, false);
    if (!config.is_object()) config = nlohmann::json::object();
  }
  (*found)->set_defaults({{"bos_token", SpecialToken(config, "bos_token")},
                          {"eos_token", SpecialToken(config, "eos_token")},
                          {"tools", nullptr}});
  return found;
}

}  // namespace sinkserve::server::http
