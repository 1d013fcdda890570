#include "common/base/strict_json.h"

#include <new>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/quote.h"
#include "common/base/utf8.h"
#include "nlohmann/json.hpp"

namespace sinkserve {
namespace {

using Json = nlohmann::json;

absl::string_view Sv(std::string_view text) { return {text.data(), text.size()}; }

// Builds the document from nlohmann's SAX events, as nlohmann's own parser does, and checks the
// nesting depth and duplicate keys as it goes. Stops at the first problem, keeping its message.
class StrictBuilder : public nlohmann::json_sax<Json> {
 public:
  Json& root() { return root_; }
  const std::string& error() const { return error_; }

  bool null() override { return Value(Json(nullptr)); }
  bool boolean(bool value) override { return Value(Json(value)); }
  bool number_integer(number_integer_t value) override { return Value(Json(value)); }
  bool number_unsigned(number_unsigned_t value) override { return Value(Json(value)); }
  bool number_float(number_float_t value, const string_t&) override { return Value(Json(value)); }
  bool string(string_t& value) override { return Value(Json(std::move(value))); }
  bool binary(binary_t&) override { return Fail("binary values are not JSON"); }

  bool start_object(std::size_t) override { return Open(Json::object()); }
  bool key(string_t& key) override {
    Frame& object = open_.back();
    auto [member, inserted] = object.value->get_ref<Json::object_t&>().try_emplace(
        std::move(key));  // moves only when inserted
    if (!inserted) {
      return Fail(absl::StrCat(
          "duplicate key ", Quote(key),
          open_.size() > 1 ? absl::StrCat(" in ", Quote(Path(open_.size() - 1))) : ""));
    }
    object.key = &member->first;
    object.member = &member->second;
    return true;
  }
  bool end_object() override { return Close(); }
  bool start_array(std::size_t) override { return Open(Json::array()); }
  bool end_array() override { return Close(); }

  bool parse_error(std::size_t position, const std::string&, const Json::exception& e) override {
    std::string what = e.what();
    if (what.size() > 300) what = absl::StrCat(what.substr(0, 300), "...");
    const std::string path = Path(open_.size());
    return Fail(absl::StrCat("invalid JSON at byte ", position, ": ", what,
                             path.empty() ? "" : absl::StrCat(" (in ", Quote(path), ")")));
  }

 private:
  // An open object or array: an object's current key and its value, an array's element count.
  struct Frame {
    Json* value;
    const std::string* key = nullptr;
    Json* member = nullptr;
    size_t count = 0;
  };

  bool Value(Json value) {
    Put(std::move(value));
    return true;
  }

  // Stores VALUE where the document is now: the root, the next array element or the current
  // key's value. Returns where it went.
  Json* Put(Json value) {
    if (open_.empty()) {
      root_ = std::move(value);
      return &root_;
    }
    Frame& parent = open_.back();
    if (parent.value->is_array()) {
      ++parent.count;
      parent.value->push_back(std::move(value));
      return &parent.value->back();
    }
    *parent.member = std::move(value);
    return parent.member;
  }

  bool Open(Json container) {
    Json* value = Put(std::move(container));
    if (open_.size() >= static_cast<size_t>(kMaxJsonDepth)) {
      return Fail(absl::StrCat("JSON nests deeper than ", kMaxJsonDepth, " levels (at ",
                               Quote(Path(open_.size())), ")"));
    }
    open_.push_back(Frame{value});
    return true;
  }

  bool Close() {
    open_.pop_back();
    return true;
  }

  // Where the parser is inside the outermost FRAMES open containers: "model.vocab", "shape[2]";
  // the keys as written, unescaped (Quote escapes the whole).
  std::string Path(size_t frames) const {
    std::string path;
    for (size_t i = 0; i < frames; ++i) {
      const Frame& frame = open_[i];
      if (frame.value->is_array()) {
        if (frame.count > 0) absl::StrAppend(&path, "[", frame.count - 1, "]");
      } else if (frame.key != nullptr) {  // null until the object's first key
        absl::StrAppend(&path, path.empty() ? "" : ".", *frame.key);
      }
    }
    return path;
  }

  bool Fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
    return false;
  }

  Json root_;
  std::vector<Frame> open_;
  std::string error_;
};

}  // namespace

absl::StatusOr<Json> ParseStrictJson(std::string_view text, std::string_view source) {
  auto refuse = [&](auto&&... what) {
    return absl::InvalidArgumentError(absl::StrCat(Sv(source), ": ", what...));
  };
  if (absl::Status valid = utf8::Validate(text); !valid.ok()) return refuse(valid.message());
  if (text.starts_with("\xEF\xBB\xBF")) return refuse("JSON starts with a byte order mark");
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos) {
    return refuse("JSON contains a NUL byte at offset ", nul, " (only whitespace may pad it)");
  }
  StrictBuilder builder;
  try {
    if (!Json::sax_parse(text.begin(), text.end(), &builder, Json::input_format_t::json,
                         /*strict=*/true, /*ignore_comments=*/false)) {
      return refuse(builder.error());
    }
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat(Sv(source), ": out of memory parsing ", text.size(), " bytes of JSON"));
  }
  return std::move(builder.root());
}

}  // namespace sinkserve
