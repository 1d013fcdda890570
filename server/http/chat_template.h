// ChatTemplate: a model's chat template (Jinja, as Hugging Face stores it in
// tokenizer_config.json's `chat_template` or a chat_template.jinja file) rendered by our own
// interpreter of the Jinja subset chat templates use (jinja_syntax.h parses, jinja_render.h
// evaluates, jinja_value.h has Python's semantics of the values), with the environment HF's
// apply_chat_template sets up: trim_blocks and lstrip_blocks on, a trailing newline of the
// template dropped, `raise_exception(message)`, `strftime_now(format)` and `namespace(...)` as
// globals, and a `tojson` filter that writes like Python's json.dumps (ensure_ascii off).
//
// The subset is listed in docs/api.md ("The Jinja subset"): statements if/for/set with
// whitespace control, Python-like expressions, and the filters, tests, methods and functions
// chat templates use. Anything else is refused when the template is parsed, naming its origin
// and line.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace sinkserve::server::http {
namespace jinja {
struct Node;
}  // namespace jinja

class ChatTemplate {
 public:
  // Parses `source`. INVALID_ARGUMENT naming `origin` (a file name) and the line on syntax
  // outside the subset.
  static absl::StatusOr<ChatTemplate> Parse(std::string_view source, std::string origin);

  // Renders with `variables` (an object: messages, add_generation_prompt, ...) over the
  // defaults as the template's globals. A template's raise_exception(msg) is INVALID_ARGUMENT with
  // msg; other evaluation errors (an undefined value used, a wrong type) INVALID_ARGUMENT naming
  // the line.
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& variables) const;

  const std::string& origin() const { return origin_; }
  // Variables every Render gets unless it gives them: bos_token, eos_token, tools.
  void set_defaults(nlohmann::ordered_json defaults) { defaults_ = std::move(defaults); }

 private:
  std::string origin_;
  std::shared_ptr<const jinja::Node> root_;
  nlohmann::ordered_json defaults_ = nlohmann::ordered_json::object();
};

// The template a server uses: the file `flag_file` when given (a .jinja file, or a JSON file
// with a `chat_template` string such as tokenizer_config.json); else `model_dir`'s
// chat_template.jinja, else its tokenizer_config.json `chat_template` (a string; the "default"
// entry of HF's list-of-named-templates form); nullopt when none of them has one. Its defaults
// hold bos_token and eos_token from the JSON flag file, else model_dir's tokenizer_config.json
// ("" when it has none), and tools: none, as HF passes them. Errors (an unreadable flag file, a
// template outside the subset) name the file.
absl::StatusOr<std::optional<ChatTemplate>> LoadChatTemplate(const std::string& model_dir,
                                                             const std::string& flag_file);

}  // namespace sinkserve::server::http
