// The values of our Jinja interpreter (chat_template.h) with Python's semantics, as jinja2
// gives them: None, bool, int, float, str, list and dict (insertion-ordered), and Jinja's
// Undefined; what {{ }} prints (str()), repr() and json.dumps, truth, equality, ordering,
// iteration, length, and the string functions templates use. Errors are TemplateError.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"

namespace sinkserve::server::http::jinja {

// A template error: at parse time the template's, at render time the request's.
struct TemplateError {
  std::string message;
};
[[noreturn]] inline void Throw(std::string message) { throw TemplateError{std::move(message)}; }

// Lists and dicts are shared, as Python objects are (namespace() relies on it).
struct Value;
using List = std::vector<Value>;
using Dict = std::vector<std::pair<std::string, Value>>;

struct Value {
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict };
  Kind kind = Kind::kUndefined;
  bool boolean = false;
  int64_t integer = 0;
  double number = 0;
  std::string text;  // a string; for Undefined, what was looked up (for errors)
  std::shared_ptr<List> list;
  std::shared_ptr<Dict> dict;
  bool is_namespace = false;

  static Value Of(Kind kind) {
    Value value;
    value.kind = kind;
    return value;
  }
  static Value Undefined(std::string what) {
    Value value;
    value.text = std::move(what);
    return value;
  }
  static Value None() { return Of(Kind::kNone); }
  static Value Bool(bool b) {
    Value value = Of(Kind::kBool);
    value.boolean = b;
    return value;
  }
  static Value Int(int64_t i) {
    Value value = Of(Kind::kInt);
    value.integer = i;
    return value;
  }
  static Value Float(double f) {
    Value value = Of(Kind::kFloat);
    value.number = f;
    return value;
  }
  static Value String(std::string s) {
    Value value = Of(Kind::kString);
    value.text = std::move(s);
    return value;
  }
  static Value MakeList(List items = {}) {
    Value value = Of(Kind::kList);
    value.list = std::make_shared<List>(std::move(items));
    return value;
  }
  static Value MakeDict(Dict items = {}) {
    Value value = Of(Kind::kDict);
    value.dict = std::make_shared<Dict>(std::move(items));
    return value;
  }

  bool is(Kind k) const { return kind == k; }
  bool numeric() const { return kind == Kind::kInt || kind == Kind::kFloat || kind == Kind::kBool; }
  double AsDouble() const {
    return kind == Kind::kFloat ? number
                                : static_cast<double>(kind == Kind::kBool ? boolean : integer);
  }
  const Value* Find(std::string_view key) const {
    for (const auto& [name, value] : *dict) {
      if (name == key) return &value;
    }
    return nullptr;
  }
};
using Kind = Value::Kind;

const char* TypeName(const Value& value);
bool Truthy(const Value& value);
// A value as Python's repr() writes it, or (json) as json.dumps(value, ensure_ascii=False) with
// its default separators does: HF's tojson.
// json.dumps' indent (-1: none, all on one line) and sort_keys.
struct JsonStyle {
  int indent = -1;
  bool sort_keys = false;
};
std::string Written(const Value& value, bool json, const JsonStyle& style = {}, int level = 0);
// Python's str(): what {{ value }} prints ("" for Undefined).
std::string Str(const Value& value);
Value FromJson(const nlohmann::ordered_json& json);
bool Equal(const Value& a, const Value& b);
// <0, 0, >0 for numbers and strings (Python refuses other orderings).
int Order(const Value& a, const Value& b);
// The items a for loop visits: a list's items, a dict's keys, a string's characters.
List Iterate(const Value& value);
// len(): code points of a string, items of a list or dict; 0 for Undefined.
int64_t Length(const Value& value);

// ASCII whitespace (the template's own text).
bool Space(char c);
// The code points of UTF-8 text: each one's first byte, length and value (invalid bytes are
// code points of their own).
struct CodePoint {
  size_t begin, size;
  uint32_t value;
};
std::vector<CodePoint> Decode(std::string_view s);
// Python's str.isspace().
bool UnicodeSpace(uint32_t c);
// Python's str.strip / lstrip / rstrip: whitespace, or the code points in `chars`.
std::string Strip(std::string_view s, bool left, bool right,
                  std::optional<std::string_view> chars = std::nullopt);
// Python's s.upper(), lower(), title() or capitalize() (`how`), on ASCII letters only;
// nullopt for another `how`.
std::optional<std::string> ChangeCase(std::string_view how, std::string_view s);

}  // namespace sinkserve::server::http::jinja
