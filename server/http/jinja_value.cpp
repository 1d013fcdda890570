#include "server/http/jinja_value.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace sinkserve::server::http::jinja {
namespace {

// Python's repr() of a float: the shortest digits that read back, with ".0" for integers.
std::string FloatRepr(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  // The fewest significant digits that read back, as d.ddde±x.
  char buffer[40];
  for (int precision = 0; precision <= 16; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*e", precision, f);
    if (std::strtod(buffer, nullptr) == f) break;
  }
  const std::string scientific = buffer;
  const size_t e = scientific.find('e');
  const bool negative = scientific[0] == '-';
  std::string digits = scientific.substr(negative ? 1 : 0, e - (negative ? 1 : 0));
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int exponent = std::atoi(scientific.c_str() + e + 1);
  std::string out = negative ? "-" : "";
  if (exponent < -4 || exponent >= 16) {  // Python's switch to exponent notation
    out += digits.substr(0, 1);
    if (digits.size() > 1) absl::StrAppend(&out, ".", digits.substr(1));
    char tail[16];
    std::snprintf(tail, sizeof(tail), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    return out + tail;
  }
  if (exponent < 0) return absl::StrCat(out, "0.", std::string(-exponent - 1, '0'), digits);
  const auto point = static_cast<size_t>(exponent) + 1;
  if (digits.size() <= point) {
    return absl::StrCat(out, digits, std::string(point - digits.size(), '0'), ".0");
  }
  return absl::StrCat(out, digits.substr(0, point), ".", digits.substr(point));
}

// A string between quotes with escapes: as Python's repr() writes it (single quotes unless it
// holds one and no double quote; \xNN), or as json.dumps does (double quotes; \uNNNN, \b, \f).
std::string Quoted(const std::string& s, bool json) {
  const char quote =
      json || (s.find('\'') != std::string::npos && s.find('"') == std::string::npos) ? '"' : '\'';
  std::string out(1, quote);
  for (char c : s) {
    const auto byte = static_cast<unsigned char>(c);
    const char* named = c == '\\'           ? "\\\\"
                        : c == '\n'         ? "\\n"
                        : c == '\r'         ? "\\r"
                        : c == '\t'         ? "\\t"
                        : json && c == '\b' ? "\\b"
                        : json && c == '\f' ? "\\f"
                                            : nullptr;
    if (named != nullptr) {
      out += named;
    } else if (c == quote) {
      out += '\\';
      out += c;
    } else if (byte < 0x20 || (!json && byte == 0x7f)) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), json ? "\\u%04x" : "\\x%02x", byte);
      out += hex;
    } else {
      out += c;
    }
  }
  return out + quote;
}

}  // namespace

const char* TypeName(const Value& value) {
  switch (value.kind) {
    case Kind::kUndefined:
      return "undefined";
    case Kind::kNone:
      return "none";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kList:
      return "list";
    case Kind::kDict:
      return "dict";
  }
  return "?";
}

bool Truthy(const Value& value) {
  switch (value.kind) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return value.boolean;
    case Kind::kInt:
      return value.integer != 0;
    case Kind::kFloat:
      return value.number != 0;
    case Kind::kString:
      return !value.text.empty();
    case Kind::kList:
      return !value.list->empty();
    case Kind::kDict:
      return !value.dict->empty();
  }
  return false;
}

// A value as Python's repr() writes it, or (json) as json.dumps(value, ensure_ascii=False) with
// its default separators does: HF's tojson.
std::string Written(const Value& value, bool json, const JsonStyle& style, int level) {
  switch (value.kind) {
    case Kind::kUndefined:
      if (json) Throw(absl::StrCat("tojson: '", value.text, "' is undefined"));
      return "";
    case Kind::kNone:
      return json ? "null" : "None";
    case Kind::kBool:
      return value.boolean ? (json ? "true" : "True") : (json ? "false" : "False");
    case Kind::kInt:
      return std::to_string(value.integer);
    case Kind::kFloat:
      if (json && std::isnan(value.number)) return "NaN";
      if (json && std::isinf(value.number)) return value.number > 0 ? "Infinity" : "-Infinity";
      return FloatRepr(value.number);
    case Kind::kString:
      return Quoted(value.text, json);
    case Kind::kList:
    case Kind::kDict: {
      std::vector<std::string> items;
      if (value.is(Kind::kList)) {
        for (const Value& item : *value.list) {
          items.push_back(Written(item, json, style, level + 1));
        }
      } else {
        Dict entries = *value.dict;
        if (style.sort_keys) {
          std::stable_sort(entries.begin(), entries.end(),
                           [](const auto& a, const auto& b) { return a.first < b.first; });
        }
        for (const auto& [key, item] : entries) {
          items.push_back(
              absl::StrCat(Quoted(key, json), ": ", Written(item, json, style, level + 1)));
        }
      }
      // json.dumps with indent: one item a line, "," without a space.
      std::string body = absl::StrJoin(items, ", ");
      if (json && style.indent >= 0 && !items.empty()) {
        auto newline = [&](int depth) {  // "\n" and the indent of `depth`
          std::string text(1 + static_cast<size_t>(depth * style.indent), ' ');
          text[0] = '\n';
          return text;
        };
        body = absl::StrCat(newline(level + 1),
                            absl::StrJoin(items, absl::StrCat(",", newline(level + 1))),
                            newline(level));
      }
      if (value.is(Kind::kList)) return absl::StrCat("[", body, "]");
      const bool ns = value.is_namespace && !json;
      return absl::StrCat(ns ? "<Namespace {" : "{", body, ns ? "}>" : "}");
    }
  }
  return "";
}

// Python's str(): what {{ value }} prints.
std::string Str(const Value& value) {
  return value.is(Kind::kString) ? value.text : Written(value, false);
}

Value FromJson(const nlohmann::ordered_json& json) {
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null:
      return Value::None();
    case nlohmann::ordered_json::value_t::boolean:
      return Value::Bool(json.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value::Int(json.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned:
      return Value::Int(static_cast<int64_t>(json.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float:
      return Value::Float(json.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return Value::String(json.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List items;
      for (const nlohmann::ordered_json& item : json) items.push_back(FromJson(item));
      return Value::MakeList(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict items;
      for (const auto& [key, item] : json.items()) items.emplace_back(key, FromJson(item));
      return Value::MakeDict(std::move(items));
    }
    default:
      return Value::None();
  }
}

bool Equal(const Value& a, const Value& b) {
  if (a.numeric() && b.numeric()) {
    if (a.is(Kind::kFloat) || b.is(Kind::kFloat)) return a.AsDouble() == b.AsDouble();
    return (a.is(Kind::kBool) ? a.boolean : a.integer) ==
           (b.is(Kind::kBool) ? b.boolean : b.integer);
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::kUndefined:
    case Kind::kNone:
      return true;
    case Kind::kString:
      return a.text == b.text;
    case Kind::kList:
      return a.list->size() == b.list->size() &&
             std::equal(a.list->begin(), a.list->end(), b.list->begin(), Equal);
    case Kind::kDict: {
      if (a.dict->size() != b.dict->size()) return false;
      for (const auto& [key, item] : *a.dict) {
        const Value* other = b.Find(key);
        if (other == nullptr || !Equal(item, *other)) return false;
      }
      return true;
    }
    default:
      return false;
  }
}

// <0, 0, >0 for numbers and strings (Python refuses other orderings).
int Order(const Value& a, const Value& b) {
  if (a.numeric() && b.numeric()) {
    const double x = a.AsDouble(), y = b.AsDouble();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is(Kind::kString) && b.is(Kind::kString)) return a.text.compare(b.text);
  Throw(absl::StrCat("cannot order ", TypeName(a), " and ", TypeName(b)));
}

bool Space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// The code points of UTF-8 text: each one's first byte, length and value (invalid bytes are
// code points of their own).
std::vector<CodePoint> Decode(std::string_view s) {
  std::vector<CodePoint> out;
  for (size_t i = 0; i < s.size();) {
    const auto lead = static_cast<unsigned char>(s[i]);
    const size_t size = lead < 0x80    ? 1
                        : lead >= 0xF0 ? 4
                        : lead >= 0xE0 ? 3
                        : lead >= 0xC0 ? 2
                                       : 1;
    uint32_t value = size == 1 ? lead : lead & (0x7F >> size);
    size_t n = 1;
    for (; n < size && i + n < s.size() && (static_cast<unsigned char>(s[i + n]) & 0xC0) == 0x80;
         ++n) {
      value = (value << 6) | (static_cast<unsigned char>(s[i + n]) & 0x3F);
    }
    out.push_back({i, n, n == size ? value : lead});
    i += n;
  }
  return out;
}

// Python's str.isspace().
bool UnicodeSpace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// Python's str.strip / lstrip / rstrip: whitespace, or the code points in `chars`.
std::string Strip(std::string_view s, bool left, bool right,
                  std::optional<std::string_view> chars) {
  const std::vector<CodePoint> points = Decode(s);
  std::vector<uint32_t> set;
  if (chars) {
    for (const CodePoint& point : Decode(*chars)) set.push_back(point.value);
  }
  auto strip = [&](const CodePoint& point) {
    return chars ? std::find(set.begin(), set.end(), point.value) != set.end()
                 : UnicodeSpace(point.value);
  };
  size_t begin = 0, end = points.size();
  while (left && begin < end && strip(points[begin])) ++begin;
  while (right && end > begin && strip(points[end - 1])) --end;
  if (begin == end) return "";
  return std::string(s.substr(points[begin].begin,
                              points[end - 1].begin + points[end - 1].size - points[begin].begin));
}

// The items a for loop visits: a list's items, a dict's keys, a string's characters (UTF-8
// code points).
List Iterate(const Value& value) {
  switch (value.kind) {
    case Kind::kUndefined:
      return {};
    case Kind::kList:
      return *value.list;
    case Kind::kDict: {
      List keys;
      for (const auto& [key, item] : *value.dict) keys.push_back(Value::String(key));
      return keys;
    }
    case Kind::kString: {
      List chars;
      for (const CodePoint& point : Decode(value.text)) {
        chars.push_back(Value::String(value.text.substr(point.begin, point.size)));
      }
      return chars;
    }
    default:
      Throw(absl::StrCat("a ", TypeName(value), " is not iterable"));
  }
}

int64_t Length(const Value& value) {
  switch (value.kind) {
    case Kind::kUndefined:
      return 0;
    case Kind::kString:
      return static_cast<int64_t>(Decode(value.text).size());
    case Kind::kList:
      return static_cast<int64_t>(value.list->size());
    case Kind::kDict:
      return static_cast<int64_t>(value.dict->size());
    default:
      Throw(absl::StrCat("a ", TypeName(value), " has no length"));
  }
}

std::optional<std::string> ChangeCase(std::string_view how, std::string_view s) {
  std::string out(s);
  bool word = false;  // title: the previous character was a letter
  for (size_t i = 0; i < out.size(); ++i) {
    const auto c = static_cast<unsigned char>(out[i]);
    const bool letter = std::isalpha(c) != 0 || c >= 0x80;
    if (c < 0x80) {
      const bool upper =
          how == "upper" || (how == "title" && !word) || (how == "capitalize" && i == 0);
      out[i] = static_cast<char>(upper ? std::toupper(c) : std::tolower(c));
    }
    word = letter;
  }
  if (how == "upper" || how == "lower" || how == "title" || how == "capitalize") return out;
  return std::nullopt;
}

}  // namespace sinkserve::server::http::jinja
