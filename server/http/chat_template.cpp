#include "server/http/chat_template.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/file.h"

namespace sinkserve::server::http {
namespace {

using Json = nlohmann::ordered_json;

// A template error: parse errors become the template's status, evaluation errors the
// request's (raise_exception's message as it is).
struct TemplateError {
  std::string message;
};

[[noreturn]] void Throw(std::string message) { throw TemplateError{std::move(message)}; }

// ---------------------------------------------------------------------------------------------
// Values: Python's None, bool, int, float, str, list and dict (insertion-ordered), and Jinja's
// Undefined. Lists and dicts are shared, as Python objects are (namespace() relies on it).

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

// Python's repr() of a float: the shortest digits that read back, with ".0" for integers.
std::string FloatRepr(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  char buffer[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*g", precision, f);
    if (std::strtod(buffer, nullptr) == f) break;
  }
  std::string text = buffer;
  if (text.find_first_of(".en") == std::string::npos) text += ".0";
  return text;
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

// A value as Python's repr() writes it, or (json) as json.dumps(value, ensure_ascii=False) with
// its default separators does: HF's tojson.
std::string Written(const Value& value, bool json) {
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
    case Kind::kList: {
      std::vector<std::string> items;
      for (const Value& item : *value.list) items.push_back(Written(item, json));
      return absl::StrCat("[", absl::StrJoin(items, ", "), "]");
    }
    case Kind::kDict: {
      std::vector<std::string> items;
      for (const auto& [key, item] : *value.dict) {
        items.push_back(absl::StrCat(Quoted(key, json), ": ", Written(item, json)));
      }
      const bool ns = value.is_namespace && !json;
      return absl::StrCat(ns ? "<Namespace {" : "{", absl::StrJoin(items, ", "), ns ? "}>" : "}");
    }
  }
  return "";
}

// Python's str(): what {{ value }} prints.
std::string Str(const Value& value) {
  return value.is(Kind::kString) ? value.text : Written(value, false);
}

Value FromJson(const Json& json) {
  switch (json.type()) {
    case Json::value_t::null:
      return Value::None();
    case Json::value_t::boolean:
      return Value::Bool(json.get<bool>());
    case Json::value_t::number_integer:
      return Value::Int(json.get<int64_t>());
    case Json::value_t::number_unsigned:
      return Value::Int(static_cast<int64_t>(json.get<uint64_t>()));
    case Json::value_t::number_float:
      return Value::Float(json.get<double>());
    case Json::value_t::string:
      return Value::String(json.get<std::string>());
    case Json::value_t::array: {
      List items;
      for (const Json& item : json) items.push_back(FromJson(item));
      return Value::MakeList(std::move(items));
    }
    case Json::value_t::object: {
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
struct CodePoint {
  size_t begin, size;
  uint32_t value;
};
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
                  std::optional<std::string_view> chars = std::nullopt) {
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

std::string MapAscii(std::string s, int (*f)(int)) {
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x80) c = static_cast<char>(f(c));
  }
  return s;
}

std::string Capitalize(const std::string& s) {
  std::string out = MapAscii(s, [](int c) { return std::tolower(c); });
  if (!out.empty())
    out = MapAscii(out.substr(0, 1), [](int c) { return std::toupper(c); }) + out.substr(1);
  return out;
}

std::string Title(const std::string& s) {
  std::string out = s;
  bool word = false;
  for (char& c : out) {
    const bool alpha = std::isalpha(static_cast<unsigned char>(c)) != 0;
    if (static_cast<unsigned char>(c) < 0x80)
      c = static_cast<char>(word ? std::tolower(c) : std::toupper(c));
    word = alpha || static_cast<unsigned char>(c) >= 0x80;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The template's text split into text and tags, with Jinja's whitespace control applied.

struct Tag {
  enum class Type { kText, kOutput, kStatement } type;
  std::string body;  // the text, or the tag's inside
  int line = 1;
};

class Lexer {
 public:
  Lexer(std::string source, const std::string& origin) : src_(std::move(source)), origin_(origin) {}

  std::vector<Tag> Run() {
    std::vector<Tag> tags;
    size_t pos = 0;
    bool line_starting = true;
    while (pos < src_.size()) {
      size_t open = pos;
      while ((open = src_.find('{', open)) != std::string::npos && open + 1 < src_.size() &&
             std::string_view("{%#").find(src_[open + 1]) == std::string_view::npos) {
        ++open;
      }
      if (open == std::string::npos || open + 1 >= src_.size()) open = src_.size();
      std::string text = src_.substr(pos, open - pos);
      if (open == src_.size()) {
        AddText(tags, std::move(text), pos);
        break;
      }
      const char kind = src_[open + 1];
      const char sign = open + 2 < src_.size() ? src_[open + 2] : '\0';
      if (sign == '-') {
        text = Strip(text, false, true);
      } else if (sign != '+' && kind != '{') {
        // lstrip_blocks: a block or comment alone on its line takes the line's indent.
        const size_t line_pos = text.rfind('\n') + 1;  // 0 when none
        if ((line_pos > 0 || line_starting) && line_pos < text.size() &&
            std::all_of(text.begin() + static_cast<std::ptrdiff_t>(line_pos), text.end(), Space)) {
          text.resize(line_pos);
        }
      }
      AddText(tags, std::move(text), pos);
      const int line = Line(open);
      size_t inner = open + 2 + (sign == '-' || sign == '+' ? 1 : 0);
      const std::string close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
      size_t end = kind == '#' ? src_.find(close, inner) : FindClose(inner, close);
      if (end == std::string::npos) {
        Throw(absl::StrCat(origin_, ":", line, ": a tag opened here is never closed with '", close,
                           "'"));
      }
      size_t body_end = end;
      const char end_sign = end > inner ? src_[end - 1] : '\0';
      if (end_sign == '-' || (end_sign == '+' && kind != '{')) --body_end;
      pos = end + 2;
      if (end_sign == '-') {
        while (pos < src_.size() && Space(src_[pos])) ++pos;
      } else if (end_sign != '+' && kind != '{' && pos < src_.size() && src_[pos] == '\n') {
        ++pos;  // trim_blocks
      }
      line_starting = src_[pos - 1] == '\n';
      if (kind == '#') continue;
      tags.push_back({kind == '{' ? Tag::Type::kOutput : Tag::Type::kStatement,
                      src_.substr(inner, body_end - inner), line});
    }
    return tags;
  }

 private:
  void AddText(std::vector<Tag>& tags, std::string text, size_t pos) {
    if (!text.empty()) tags.push_back({Tag::Type::kText, std::move(text), Line(pos)});
  }

  int Line(size_t pos) const {
    return 1 + static_cast<int>(
                   std::count(src_.begin(), src_.begin() + static_cast<std::ptrdiff_t>(pos), '\n'));
  }

  // The closing delimiter's position, skipping string literals.
  size_t FindClose(size_t pos, const std::string& close) const {
    for (; pos + 1 < src_.size(); ++pos) {
      const char c = src_[pos];
      if (c == '\'' || c == '"') {
        for (++pos; pos < src_.size() && src_[pos] != c; ++pos) {
          if (src_[pos] == '\\') ++pos;
        }
        continue;
      }
      if (src_.compare(pos, 2, close) == 0) return pos;
    }
    return std::string::npos;
  }

  std::string src_;
  const std::string& origin_;
};

// ---------------------------------------------------------------------------------------------
// Expressions.

struct Token {
  enum class Type { kName, kString, kInt, kFloat, kOp, kEnd } type;
  std::string text;
};

std::vector<Token> Tokenize(const std::string& body, const std::string& where) {
  std::vector<Token> tokens;
  for (size_t i = 0; i < body.size();) {
    const char c = body[i];
    if (Space(c)) {
      ++i;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < body.size() &&
             (std::isalnum(static_cast<unsigned char>(body[j])) || body[j] == '_'))
        ++j;
      tokens.push_back({Token::Type::kName, body.substr(i, j - i)});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < body.size() &&
             (std::isdigit(static_cast<unsigned char>(body[j])) || body[j] == '_'))
        ++j;
      bool is_float = false;
      if (j + 1 < body.size() && body[j] == '.' &&
          std::isdigit(static_cast<unsigned char>(body[j + 1]))) {
        is_float = true;
        for (++j; j < body.size() && std::isdigit(static_cast<unsigned char>(body[j])); ++j) {
        }
      }
      std::string digits = body.substr(i, j - i);
      digits.erase(std::remove(digits.begin(), digits.end(), '_'), digits.end());
      tokens.push_back({is_float ? Token::Type::kFloat : Token::Type::kInt, digits});
      i = j;
    } else if (c == '\'' || c == '"') {
      std::string text;
      size_t j = i + 1;
      for (; j < body.size() && body[j] != c; ++j) {
        if (body[j] != '\\' || j + 1 >= body.size()) {
          text += body[j];
          continue;
        }
        const char e = body[++j];
        switch (e) {
          case 'n':
            text += '\n';
            break;
          case 't':
            text += '\t';
            break;
          case 'r':
            text += '\r';
            break;
          case '0':
            text += '\0';
            break;
          case '\\':
          case '\'':
          case '"':
            text += e;
            break;
          case '\n':
            break;
          case 'u': {
            if (j + 4 >= body.size()) Throw(absl::StrCat(where, ": a bad \\u escape"));
            const uint32_t cp =
                static_cast<uint32_t>(std::stoul(body.substr(j + 1, 4), nullptr, 16));
            j += 4;
            if (cp < 0x80) {
              text += static_cast<char>(cp);
            } else if (cp < 0x800) {
              text += static_cast<char>(0xC0 | (cp >> 6));
              text += static_cast<char>(0x80 | (cp & 0x3F));
            } else {
              text += static_cast<char>(0xE0 | (cp >> 12));
              text += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
              text += static_cast<char>(0x80 | (cp & 0x3F));
            }
            break;
          }
          default:
            text += '\\';
            text += e;
        }
      }
      if (j >= body.size()) Throw(absl::StrCat(where, ": a string literal is not closed"));
      tokens.push_back({Token::Type::kString, std::move(text)});
      i = j + 1;
    } else {
      static const char* const kOps[] = {"==", "!=", "<=", ">=", "//", "**", "(", ")", "[",
                                         "]",  "{",  "}",  ",",  ".",  ":",  "|", "~", "+",
                                         "-",  "*",  "/",  "%",  "<",  ">",  "="};
      const char* found = nullptr;
      for (const char* op : kOps) {
        if (body.compare(i, std::strlen(op), op) == 0) {
          found = op;
          break;
        }
      }
      if (found == nullptr)
        Throw(absl::StrCat(where, ": unexpected character '", std::string(1, c), "'"));
      tokens.push_back({Token::Type::kOp, found});
      i += std::strlen(found);
    }
  }
  tokens.push_back({Token::Type::kEnd, ""});
  return tokens;
}

struct Expr;
using ExprPtr = std::shared_ptr<const Expr>;

struct Expr {
  enum class Type {
    kLiteral,
    kName,
    kList,
    kDict,
    kAttr,
    kItem,
    kSlice,
    kCall,
    kFilter,
    kTest,
    kNot,
    kNeg,
    kBinary,
    kCompare,
    kAnd,
    kOr,
    kCond
  } type = Type::kLiteral;
  std::string name;  // a name, attribute, operator, filter or test
  Value literal;
  std::vector<ExprPtr> args;  // operands (nullptr: an omitted slice bound)
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;  // kCompare: the operators between args
  bool negated = false;          // kTest: `is not`
};

ExprPtr Make(Expr expr) { return std::make_shared<const Expr>(std::move(expr)); }

Expr NewExpr(Expr::Type type, std::vector<ExprPtr> args = {}, std::string name = {}) {
  Expr expr;
  expr.type = type;
  expr.args = std::move(args);
  expr.name = std::move(name);
  return expr;
}

ExprPtr Literal(Value value) {
  Expr expr = NewExpr(Expr::Type::kLiteral);
  expr.literal = std::move(value);
  return Make(std::move(expr));
}

const std::vector<std::string_view>& Filters() {
  static const std::vector<std::string_view> kFilters = {
      "trim", "length",  "count", "tojson", "upper", "lower", "capitalize", "title", "string",
      "int",  "default", "d",     "first",  "last",  "join",  "list",       "items", "reverse"};
  return kFilters;
}

const std::vector<std::string_view>& Tests() {
  static const std::vector<std::string_view> kTests = {
      "defined", "undefined", "none",     "string", "number", "integer", "boolean",
      "mapping", "sequence",  "iterable", "true",   "false",  "even",    "odd"};
  return kTests;
}

const std::vector<std::string_view>& Functions() {
  static const std::vector<std::string_view> kFunctions = {"raise_exception", "namespace", "range"};
  return kFunctions;
}

const std::vector<std::string_view>& Methods() {
  static const std::vector<std::string_view> kMethods = {
      "strip", "lstrip", "rstrip",     "startswith", "endswith", "split", "replace", "upper",
      "lower", "title",  "capitalize", "get",        "items",    "keys",  "values"};
  return kMethods;
}

bool Known(const std::vector<std::string_view>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

class ExprParser {
 public:
  ExprParser(const std::string& body, std::string where)
      : where_(std::move(where)), tokens_(Tokenize(body, where_)) {}

  bool AtEnd() const { return Peek().type == Token::Type::kEnd; }
  const Token& Peek(size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  bool IsName(std::string_view name, size_t ahead = 0) const {
    return Peek(ahead).type == Token::Type::kName && Peek(ahead).text == name;
  }
  bool IsOp(std::string_view op) const {
    return Peek().type == Token::Type::kOp && Peek().text == op;
  }
  bool Accept(std::string_view op) {
    if (!IsOp(op)) return false;
    ++pos_;
    return true;
  }
  bool AcceptName(std::string_view name) {
    if (!IsName(name)) return false;
    ++pos_;
    return true;
  }
  void Expect(std::string_view op) {
    if (!Accept(op)) Fail(absl::StrCat("expected '", std::string(op), "'"));
  }
  std::string Name() {
    if (Peek().type != Token::Type::kName) Fail("expected a name");
    return tokens_[pos_++].text;
  }
  void ExpectEnd() {
    if (!AtEnd()) Fail("unexpected text");
  }
  [[noreturn]] void Fail(std::string_view what) const {
    const Token& token = Peek();
    Throw(absl::StrCat(where_, ": ", std::string(what),
                       token.type == Token::Type::kEnd ? " at the end of the tag"
                                                       : absl::StrCat(" at '", token.text, "'")));
  }

  // A whole expression; with_condition false stops before `if` (a for loop's iterable).
  ExprPtr Expression(bool with_condition = true) {
    ExprPtr expr = Or();
    if (with_condition && AcceptName("if")) {
      ExprPtr condition = Or();
      ExprPtr otherwise = AcceptName("else") ? Expression() : nullptr;
      return Make(NewExpr(Expr::Type::kCond, {expr, condition, otherwise}));
    }
    return expr;
  }

 private:
  ExprPtr Or() {
    ExprPtr left = And();
    while (AcceptName("or")) left = Make(NewExpr(Expr::Type::kOr, {left, And()}));
    return left;
  }
  ExprPtr And() {
    ExprPtr left = Not();
    while (AcceptName("and")) left = Make(NewExpr(Expr::Type::kAnd, {left, Not()}));
    return left;
  }
  ExprPtr Not() {
    if (IsName("not") && !IsName("in", 1) && AcceptName("not")) {
      return Make(NewExpr(Expr::Type::kNot, {Not()}));
    }
    return Compare();
  }
  ExprPtr Compare() {
    ExprPtr first = Sum();
    Expr compare = NewExpr(Expr::Type::kCompare, {first});
    while (true) {
      std::string op;
      if (Peek().type == Token::Type::kOp &&
          (IsOp("==") || IsOp("!=") || IsOp("<") || IsOp(">") || IsOp("<=") || IsOp(">="))) {
        op = tokens_[pos_++].text;
      } else if (AcceptName("in")) {
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        pos_ += 2;
        op = "not in";
      } else {
        break;
      }
      compare.ops.push_back(op);
      compare.args.push_back(Sum());
    }
    return compare.ops.empty() ? first : Make(std::move(compare));
  }
  ExprPtr Binary(ExprPtr left, std::string op, ExprPtr right) {
    return Make(NewExpr(Expr::Type::kBinary, {std::move(left), std::move(right)}, std::move(op)));
  }
  ExprPtr Sum() {
    ExprPtr left = Concat();
    while (IsOp("+") || IsOp("-")) {
      std::string op = tokens_[pos_++].text;
      left = Binary(left, op, Concat());
    }
    return left;
  }
  ExprPtr Concat() {
    ExprPtr left = Product();
    while (Accept("~")) left = Binary(left, "~", Product());
    return left;
  }
  ExprPtr Product() {
    ExprPtr left = Power();
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      std::string op = tokens_[pos_++].text;
      left = Binary(left, op, Power());
    }
    return left;
  }
  ExprPtr Power() {
    ExprPtr left = Unary(true);
    while (Accept("**")) left = Binary(left, "**", Unary(true));
    return left;
  }
  ExprPtr Unary(bool with_filters) {
    ExprPtr expr;
    if (Accept("-")) {
      expr = Make(NewExpr(Expr::Type::kNeg, {Unary(false)}));
    } else if (Accept("+")) {
      expr = Unary(false);
    } else {
      expr = Primary();
    }
    expr = Postfix(expr);
    return with_filters ? FilterChain(expr) : expr;
  }
  ExprPtr Primary() {
    const Token token = Peek();
    switch (token.type) {
      case Token::Type::kString: {
        std::string text;
        while (Peek().type == Token::Type::kString) text += tokens_[pos_++].text;  // "a" "b"
        return Literal(Value::String(std::move(text)));
      }
      case Token::Type::kInt:
        ++pos_;
        return Literal(Value::Int(std::stoll(token.text)));
      case Token::Type::kFloat:
        ++pos_;
        return Literal(Value::Float(std::stod(token.text)));
      case Token::Type::kName: {
        ++pos_;
        if (token.text == "true" || token.text == "True") return Literal(Value::Bool(true));
        if (token.text == "false" || token.text == "False") return Literal(Value::Bool(false));
        if (token.text == "none" || token.text == "None") return Literal(Value::None());
        return Make(NewExpr(Expr::Type::kName, {}, token.text));
      }
      case Token::Type::kOp:
        if (Accept("(")) {
          ExprPtr inner = Expression();
          if (!IsOp(",")) {
            Expect(")");
            return inner;
          }
          Expr tuple = NewExpr(Expr::Type::kList, {inner});
          while (Accept(",") && !IsOp(")")) tuple.args.push_back(Expression());
          Expect(")");
          return Make(std::move(tuple));
        }
        if (Accept("[")) {
          Expr list = NewExpr(Expr::Type::kList);
          while (!IsOp("]")) {
            list.args.push_back(Expression());
            if (!Accept(",")) break;
          }
          Expect("]");
          return Make(std::move(list));
        }
        if (Accept("{")) {
          Expr dict = NewExpr(Expr::Type::kDict);
          while (!IsOp("}")) {
            dict.args.push_back(Expression());
            Expect(":");
            dict.args.push_back(Expression());
            if (!Accept(",")) break;
          }
          Expect("}");
          return Make(std::move(dict));
        }
        break;
      case Token::Type::kEnd:
        break;
    }
    Fail("expected a value");
  }
  // Call arguments after '(': positional, then name=value.
  void Arguments(Expr& call) {
    while (!IsOp(")")) {
      if (Peek().type == Token::Type::kName && Peek(1).type == Token::Type::kOp &&
          Peek(1).text == "=") {
        std::string name = Name();
        Expect("=");
        call.kwargs.emplace_back(std::move(name), Expression());
      } else {
        if (!call.kwargs.empty()) Fail("a positional argument after a keyword argument");
        call.args.push_back(Expression());
      }
      if (!Accept(",")) break;
    }
    Expect(")");
  }
  // A call of `callee` (its '(' taken): the global functions, or a method the subset has.
  ExprPtr CallOf(ExprPtr callee) {
    Expr call = NewExpr(Expr::Type::kCall, {callee});
    Arguments(call);
    if (callee->type == Expr::Type::kName) {
      if (!Known(Functions(), callee->name)) {
        Fail(absl::StrCat("unsupported function '", callee->name, "'"));
      }
      if (callee->name != "namespace" && !call.kwargs.empty()) {
        Fail(absl::StrCat("unsupported: keyword arguments of ", callee->name, "()"));
      }
    } else if (callee->type != Expr::Type::kAttr || !Known(Methods(), callee->name)) {
      Fail(callee->type == Expr::Type::kAttr
               ? absl::StrCat("unsupported method '", callee->name, "'")
               : "only functions and methods can be called");
    } else if (!call.kwargs.empty()) {
      Fail(absl::StrCat("unsupported: keyword arguments of the method '", callee->name, "'"));
    }
    return Make(std::move(call));
  }

  ExprPtr Postfix(ExprPtr expr) {
    while (true) {
      if (Accept(".")) {
        if (Peek().type == Token::Type::kInt) {
          expr = Make(NewExpr(Expr::Type::kItem,
                              {expr, Literal(Value::Int(std::stoll(tokens_[pos_++].text)))}));
        } else {
          expr = Make(NewExpr(Expr::Type::kAttr, {expr}, Name()));
        }
      } else if (Accept("[")) {
        ExprPtr start = IsOp(":") ? nullptr : Expression();
        if (Accept(":")) {
          ExprPtr stop = IsOp(":") || IsOp("]") ? nullptr : Expression();
          ExprPtr step = Accept(":") && !IsOp("]") ? Expression() : nullptr;
          expr = Make(NewExpr(Expr::Type::kSlice, {expr, start, stop, step}));
        } else {
          expr = Make(NewExpr(Expr::Type::kItem, {expr, start}));
        }
        Expect("]");
      } else if (Accept("(")) {
        expr = CallOf(expr);
      } else {
        return expr;
      }
    }
  }
  ExprPtr FilterChain(ExprPtr expr) {
    while (true) {
      if (Accept("|")) {
        Expr filter = NewExpr(Expr::Type::kFilter, {expr}, Name());
        if (!Known(Filters(), filter.name))
          Fail(absl::StrCat("unsupported filter '", filter.name, "'"));
        if (Accept("(")) Arguments(filter);
        if (!filter.kwargs.empty()) {
          Fail(absl::StrCat("unsupported: keyword arguments of the filter '", filter.name, "'"));
        }
        expr = Make(std::move(filter));
      } else if (AcceptName("is")) {
        Expr test = NewExpr(Expr::Type::kTest, {expr});
        test.negated = AcceptName("not");
        test.name = Name();
        if (!Known(Tests(), test.name)) Fail(absl::StrCat("unsupported test '", test.name, "'"));
        expr = Make(std::move(test));
      } else if (Accept("(")) {
        expr = CallOf(expr);
      } else {
        return expr;
      }
    }
  }

  std::string where_;
  std::vector<Token> tokens_;
  size_t pos_ = 0;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Statements.

struct ChatTemplate::Node {
  enum class Type { kBody, kText, kOutput, kIf, kFor, kSet, kBreak, kContinue } type = Type::kBody;
  int line = 0;
  std::string text;  // kText
  std::vector<ExprPtr>
      exprs;  // kOutput: [value]; kIf: conditions; kFor: [iterable, filter]; kSet: [value]
  std::vector<std::shared_ptr<Node>>
      body;  // kBody: statements; kIf: a branch per condition (+ else); kFor: [body, else]
  std::vector<std::string> targets;  // kFor: loop variables; kSet: [name] or [namespace, attribute]
};

namespace {

using Node = ChatTemplate::Node;
using NodePtr = std::shared_ptr<Node>;

NodePtr NewNode(Node::Type type, int line = 0, std::string text = {}) {
  auto node = std::make_shared<Node>();
  node->type = type;
  node->line = line;
  node->text = std::move(text);
  return node;
}

class TemplateParser {
 public:
  TemplateParser(std::vector<Tag> tags, const std::string& origin)
      : tags_(std::move(tags)), origin_(origin) {}

  NodePtr Run() {
    std::string end;
    return Body(nullptr, {}, &end);
  }

 private:
  std::string Where(const Tag& tag) const { return absl::StrCat(origin_, ":", tag.line); }

  // Statements until a block tag whose first word is in `ends` (its parser left in *end_parser),
  // inside the block `opener` opened (nullptr: the template).
  NodePtr Body(const Tag* opener, const std::vector<std::string_view>& ends, std::string* end,
               std::unique_ptr<ExprParser>* end_parser = nullptr) {
    auto body = NewNode(Node::Type::kBody);
    while (pos_ < tags_.size()) {
      const Tag& tag = tags_[pos_++];
      const std::string where = Where(tag);
      if (tag.type == Tag::Type::kText) {
        body->body.push_back(NewNode(Node::Type::kText, tag.line, tag.body));
        continue;
      }
      auto parser = std::make_unique<ExprParser>(tag.body, where);
      if (tag.type == Tag::Type::kOutput) {
        auto node = NewNode(Node::Type::kOutput, tag.line);
        node->exprs.push_back(parser->Expression());
        parser->ExpectEnd();
        body->body.push_back(node);
        continue;
      }
      const std::string word = parser->Name();
      if (std::find(ends.begin(), ends.end(), word) != ends.end()) {
        *end = word;
        if (end_parser != nullptr) *end_parser = std::move(parser);
        return body;
      }
      body->body.push_back(Statement(word, *parser, tag));
    }
    if (opener != nullptr) {
      Throw(absl::StrCat(Where(*opener), ": '{%", opener->body,
                         "%}' is never closed (expected '{% ", std::string(ends.back()), " %}')"));
    }
    return body;
  }

  NodePtr Statement(const std::string& word, ExprParser& parser, const Tag& tag) {
    auto node = NewNode(Node::Type::kBody, tag.line);
    const std::string where = Where(tag);
    if (word == "if") {
      node->type = Node::Type::kIf;
      node->exprs.push_back(parser.Expression());
      parser.ExpectEnd();
      while (true) {
        std::string end;
        std::unique_ptr<ExprParser> end_parser;
        node->body.push_back(Body(&tag, {"elif", "else", "endif"}, &end, &end_parser));
        if (end == "elif") {
          node->exprs.push_back(end_parser->Expression());
          end_parser->ExpectEnd();
        } else if (end == "else") {
          end_parser->ExpectEnd();
          node->body.push_back(Body(&tag, {"endif"}, &end, &end_parser));
          end_parser->ExpectEnd();
          break;
        } else {
          end_parser->ExpectEnd();
          break;
        }
      }
    } else if (word == "for") {
      node->type = Node::Type::kFor;
      do {
        node->targets.push_back(parser.Name());
      } while (parser.Accept(","));
      if (!parser.AcceptName("in")) parser.Fail("expected 'in'");
      node->exprs.push_back(parser.Expression(false));
      node->exprs.push_back(parser.AcceptName("if") ? parser.Expression(false) : nullptr);
      if (parser.IsName("recursive")) parser.Fail("unsupported: recursive loops");
      parser.ExpectEnd();
      std::string end;
      std::unique_ptr<ExprParser> end_parser;
      ++loop_depth_;
      node->body.push_back(Body(&tag, {"else", "endfor"}, &end, &end_parser));
      --loop_depth_;
      end_parser->ExpectEnd();
      if (end == "else") {
        node->body.push_back(Body(&tag, {"endfor"}, &end, &end_parser));
        end_parser->ExpectEnd();
      }
    } else if (word == "set") {
      node->type = Node::Type::kSet;
      node->targets.push_back(parser.Name());
      if (parser.Accept(".")) node->targets.push_back(parser.Name());
      if (!parser.Accept("="))
        parser.Fail(
            "unsupported: a block set ({% set x %}...{% endset %}) or a tuple target; expected "
            "'='");
      node->exprs.push_back(parser.Expression());
      parser.ExpectEnd();
    } else if (word == "break" || word == "continue") {
      if (loop_depth_ == 0) Throw(absl::StrCat(where, ": '", word, "' outside a for loop"));
      node->type = word == "break" ? Node::Type::kBreak : Node::Type::kContinue;
      parser.ExpectEnd();
    } else {
      Throw(absl::StrCat(where, ": unsupported or unexpected statement '{% ", word,
                         " %}' (sinkserve renders the Jinja subset of docs/api.md)"));
    }
    return node;
  }

  std::vector<Tag> tags_;
  size_t pos_ = 0;
  int loop_depth_ = 0;
  const std::string& origin_;
};

// ---------------------------------------------------------------------------------------------
// Evaluation.

// The raise_exception() of a template: its message, unprefixed, is the request's error.
struct RaisedError {
  std::string message;
};

enum class Flow { kNormal, kBreak, kContinue };

class Renderer {
 public:
  Renderer(const std::string& origin, Dict globals) : origin_(origin) {
    scopes_.push_back(std::move(globals));
  }

  Flow Run(const Node& node, std::string& out) {
    switch (node.type) {
      case Node::Type::kBody:
        for (const NodePtr& child : node.body) {
          if (Flow flow = Run(*child, out); flow != Flow::kNormal) return flow;
        }
        return Flow::kNormal;
      case Node::Type::kText:
        out += node.text;
        return Flow::kNormal;
      case Node::Type::kOutput:
        line_ = node.line;
        out += Str(Eval(*node.exprs[0]));
        return Flow::kNormal;
      case Node::Type::kIf:
        line_ = node.line;
        for (size_t i = 0; i < node.exprs.size(); ++i) {
          if (Truthy(Eval(*node.exprs[i]))) return Run(*node.body[i], out);
        }
        return node.body.size() > node.exprs.size() ? Run(*node.body.back(), out) : Flow::kNormal;
      case Node::Type::kFor:
        return For(node, out);
      case Node::Type::kSet: {
        line_ = node.line;
        Value value = Eval(*node.exprs[0]);
        if (node.targets.size() == 1) {
          Assign(scopes_.back(), node.targets[0], std::move(value));
        } else {
          Value target = Lookup(node.targets[0]);
          if (!target.is_namespace)
            Fail(absl::StrCat("cannot assign to an attribute of '", node.targets[0],
                              "' (not a namespace())"));
          Assign(*target.dict, node.targets[1], std::move(value));
        }
        return Flow::kNormal;
      }
      case Node::Type::kBreak:
        return Flow::kBreak;
      case Node::Type::kContinue:
        return Flow::kContinue;
    }
    return Flow::kNormal;
  }

 private:
  [[noreturn]] void Fail(const std::string& what) const {
    Throw(absl::StrCat(origin_, ":", line_, ": ", what));
  }

  static void Assign(Dict& scope, const std::string& name, Value value) {
    for (auto& [key, item] : scope) {
      if (key == name) {
        item = std::move(value);
        return;
      }
    }
    scope.emplace_back(name, std::move(value));
  }

  Value Lookup(const std::string& name) const {
    for (auto scope = scopes_.rbegin(); scope != scopes_.rend(); ++scope) {
      for (const auto& [key, value] : *scope) {
        if (key == name) return value;
      }
    }
    return Value::Undefined(name);
  }

  Flow For(const Node& node, std::string& out) {
    line_ = node.line;
    List items;
    const List all = Iterate(Eval(*node.exprs[0]));
    for (const Value& item : all) {
      if (node.exprs[1] == nullptr) {
        items.push_back(item);
        continue;
      }
      scopes_.emplace_back();
      Bind(node.targets, item);
      const bool keep = Truthy(Eval(*node.exprs[1]));
      scopes_.pop_back();
      if (keep) items.push_back(item);
    }
    const auto length = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < length; ++i) {
      scopes_.emplace_back();
      Bind(node.targets, items[static_cast<size_t>(i)]);
      Dict loop = {{"index0", Value::Int(i)},
                   {"index", Value::Int(i + 1)},
                   {"revindex0", Value::Int(length - i - 1)},
                   {"revindex", Value::Int(length - i)},
                   {"first", Value::Bool(i == 0)},
                   {"last", Value::Bool(i == length - 1)},
                   {"length", Value::Int(length)},
                   {"previtem",
                    i > 0 ? items[static_cast<size_t>(i - 1)] : Value::Undefined("loop.previtem")},
                   {"nextitem", i + 1 < length ? items[static_cast<size_t>(i + 1)]
                                               : Value::Undefined("loop.nextitem")}};
      Assign(scopes_.back(), "loop", Value::MakeDict(std::move(loop)));
      const Flow flow = Run(*node.body[0], out);
      scopes_.pop_back();
      if (flow == Flow::kBreak) break;
    }
    if (length == 0 && node.body.size() > 1) return Run(*node.body[1], out);
    return Flow::kNormal;
  }

  void Bind(const std::vector<std::string>& targets, const Value& item) {
    if (targets.size() == 1) {
      Assign(scopes_.back(), targets[0], item);
      return;
    }
    const List parts = Iterate(item);
    if (parts.size() != targets.size()) {
      Fail(absl::StrCat("cannot unpack ", parts.size(), " values into ", targets.size(),
                        " loop variables"));
    }
    for (size_t i = 0; i < targets.size(); ++i) Assign(scopes_.back(), targets[i], parts[i]);
  }

  void RequireDefined(const Value& value) const {
    if (value.is(Kind::kUndefined)) Fail(absl::StrCat("'", value.text, "' is undefined"));
  }

  Value Attribute(const Value& object, const std::string& name) const {
    RequireDefined(object);
    if (object.is(Kind::kDict)) {
      if (const Value* value = object.Find(name)) return *value;
    }
    return Value::Undefined(absl::StrCat(Written(object, false).substr(0, 40), ".", name));
  }

  static int64_t Index(int64_t index, int64_t size) { return index < 0 ? index + size : index; }

  Value Item(const Value& object, const Value& key) const {
    RequireDefined(object);
    if (object.is(Kind::kDict)) {
      if (key.is(Kind::kString)) {
        if (const Value* value = object.Find(key.text)) return *value;
      }
      return Value::Undefined(absl::StrCat("[", Written(key, false), "]"));
    }
    if ((object.is(Kind::kList) || object.is(Kind::kString)) && key.is(Kind::kInt)) {
      const List items = object.is(Kind::kList) ? List() : Iterate(object);
      const List& list = object.is(Kind::kList) ? *object.list : items;
      const int64_t i = Index(key.integer, static_cast<int64_t>(list.size()));
      if (i >= 0 && i < static_cast<int64_t>(list.size())) return list[static_cast<size_t>(i)];
      return Value::Undefined(absl::StrCat("[", key.integer, "]"));
    }
    if (key.is(Kind::kString)) return Attribute(object, key.text);
    Fail(absl::StrCat("cannot subscript a ", TypeName(object), " with a ", TypeName(key)));
  }

  Value Slice(const Value& object, const Expr& expr) {
    const List items = Iterate(object);
    const auto size = static_cast<int64_t>(items.size());
    auto bound = [&](size_t i) -> std::optional<int64_t> {
      if (expr.args[i] == nullptr) return std::nullopt;
      Value value = Eval(*expr.args[i]);
      if (value.is(Kind::kNone)) return std::nullopt;
      if (!value.is(Kind::kInt)) Fail("slice bounds must be integers");
      return value.integer;
    };
    const int64_t step = bound(3).value_or(1);
    if (step == 0) Fail("slice step cannot be zero");
    auto clamp = [&](std::optional<int64_t> v, int64_t fallback) {
      if (!v) return fallback;
      int64_t i = Index(*v, size);
      return step > 0 ? std::clamp<int64_t>(i, 0, size) : std::clamp<int64_t>(i, -1, size - 1);
    };
    const int64_t start = clamp(bound(1), step > 0 ? 0 : size - 1);
    const int64_t stop = clamp(bound(2), step > 0 ? size : -1);
    List out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
      out.push_back(items[static_cast<size_t>(i)]);
    if (!object.is(Kind::kString)) return Value::MakeList(std::move(out));
    std::string text;
    for (const Value& c : out) text += c.text;
    return Value::String(std::move(text));
  }

  std::vector<Value> Args(const Expr& call, size_t first = 1) {
    std::vector<Value> args;
    for (size_t i = first; i < call.args.size(); ++i) args.push_back(Eval(*call.args[i]));
    return args;
  }

  void ArgCount(const std::string& name, const std::vector<Value>& args, size_t lo,
                size_t hi) const {
    if (args.size() < lo || args.size() > hi) {
      Fail(absl::StrCat(name, "() takes ",
                        lo == hi ? absl::StrCat(lo) : absl::StrCat(lo, " to ", hi),
                        " arguments, got ", args.size()));
    }
  }

  const std::string& StringArg(const std::string& name, const Value& value) const {
    if (!value.is(Kind::kString))
      Fail(absl::StrCat(name, "(): expected a string, got a ", TypeName(value)));
    return value.text;
  }

  // A call the parser admitted: a global function (Functions()), or a method (Methods()).
  Value Call(const Expr& call) {
    const Expr& callee = *call.args[0];
    if (callee.type == Expr::Type::kName) return Function(callee.name, call);
    const Value object = Eval(*callee.args[0]);
    RequireDefined(object);
    const std::string& method = callee.name;
    std::vector<Value> args = Args(call);
    if (object.is(Kind::kString)) {
      const std::string& s = object.text;
      if (method == "strip" || method == "lstrip" || method == "rstrip") {
        ArgCount(method, args, 0, 1);
        std::optional<std::string_view> chars;
        if (!args.empty() && !args[0].is(Kind::kNone)) chars = StringArg(method, args[0]);
        return Value::String(Strip(s, method != "rstrip", method != "lstrip", chars));
      }
      if (method == "startswith" || method == "endswith") {
        ArgCount(method, args, 1, 1);
        const std::string& affix = StringArg(method, args[0]);
        return Value::Bool(method == "startswith" ? s.starts_with(affix) : s.ends_with(affix));
      }
      if (method == "upper")
        return Value::String(MapAscii(s, [](int c) { return std::toupper(c); }));
      if (method == "lower")
        return Value::String(MapAscii(s, [](int c) { return std::tolower(c); }));
      if (method == "capitalize") return Value::String(Capitalize(s));
      if (method == "title") return Value::String(Title(s));
      if (method == "replace") {
        ArgCount(method, args, 2, 2);
        const std::string& from = StringArg(method, args[0]);
        const std::string& to = StringArg(method, args[1]);
        if (from.empty()) Fail("replace(): an empty pattern is not supported");
        std::string out;
        size_t pos = 0;
        for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
          out += s.substr(pos, hit - pos) + to;
        }
        return Value::String(out + s.substr(pos));
      }
      if (method == "split") {
        ArgCount(method, args, 0, 1);
        List parts;
        if (args.empty() || args[0].is(Kind::kNone)) {
          const std::vector<CodePoint> points = Decode(s);
          for (size_t i = 0; i < points.size();) {
            while (i < points.size() && UnicodeSpace(points[i].value)) ++i;
            size_t j = i;
            while (j < points.size() && !UnicodeSpace(points[j].value)) ++j;
            if (j > i) {
              parts.push_back(Value::String(s.substr(
                  points[i].begin, points[j - 1].begin + points[j - 1].size - points[i].begin)));
            }
            i = j;
          }
        } else {
          const std::string& sep = StringArg(method, args[0]);
          if (sep.empty()) Fail("split(): empty separator");
          size_t pos = 0;
          for (size_t hit; (hit = s.find(sep, pos)) != std::string::npos; pos = hit + sep.size()) {
            parts.push_back(Value::String(s.substr(pos, hit - pos)));
          }
          parts.push_back(Value::String(s.substr(pos)));
        }
        return Value::MakeList(std::move(parts));
      }
    }
    if (object.is(Kind::kDict) && !object.is_namespace) {
      if (method == "get") {
        ArgCount(method, args, 1, 2);
        if (args[0].is(Kind::kString)) {
          if (const Value* value = object.Find(args[0].text)) return *value;
        }
        return args.size() > 1 ? args[1] : Value::None();
      }
      if (method == "items" || method == "keys" || method == "values") {
        ArgCount(method, args, 0, 0);
        List out;
        for (const auto& [key, value] : *object.dict) {
          if (method == "items") {
            out.push_back(Value::MakeList({Value::String(key), value}));
          } else {
            out.push_back(method == "keys" ? Value::String(key) : value);
          }
        }
        return Value::MakeList(std::move(out));
      }
    }
    Fail(absl::StrCat("a ", TypeName(object), " has no method '", method, "' here"));
  }

  Value Function(const std::string& name, const Expr& call) {
    if (name == "namespace") {
      Value ns = Value::MakeDict();
      ns.is_namespace = true;
      for (const auto& [key, value] : call.kwargs) Assign(*ns.dict, key, Eval(*value));
      return ns;
    }
    std::vector<Value> args = Args(call);
    if (name == "raise_exception") {
      ArgCount(name, args, 1, 1);
      throw RaisedError{Str(args[0])};
    }
    ArgCount("range", args, 1, 3);
    for (const Value& arg : args) {
      if (!arg.is(Kind::kInt)) Fail("range(): integers only");
    }
    const int64_t start = args.size() > 1 ? args[0].integer : 0;
    const int64_t stop = args.size() > 1 ? args[1].integer : args[0].integer;
    const int64_t step = args.size() > 2 ? args[2].integer : 1;
    if (step == 0) Fail("range(): step cannot be zero");
    List out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(Value::Int(i));
    return Value::MakeList(std::move(out));
  }

  Value Filter(const Expr& filter) {
    Value value = Eval(*filter.args[0]);
    std::vector<Value> args = Args(filter);
    const std::string& name = filter.name;
    if (name == "default" || name == "d") {
      ArgCount(name, args, 0, 2);
      const bool boolean = args.size() > 1 && Truthy(args[1]);
      const bool use = boolean ? !Truthy(value) : value.is(Kind::kUndefined);
      return use ? (args.empty() ? Value::String("") : args[0]) : value;
    }
    if (name == "join") {
      ArgCount(name, args, 0, 1);
      const std::string separator = args.empty() ? "" : Str(args[0]);
      std::vector<std::string> parts;
      for (const Value& item : Iterate(value)) parts.push_back(Str(item));
      return Value::String(absl::StrJoin(parts, separator));
    }
    ArgCount(name, args, 0, 0);
    if (name == "length" || name == "count") return Value::Int(Length(value));
    if (name == "tojson") return Value::String(Written(value, true));
    if (name == "string") return Value::String(Str(value));
    if (name == "list") return Value::MakeList(Iterate(value));
    if (name == "first" || name == "last" || name == "reverse") {
      List items = Iterate(value);
      if (name == "reverse") {
        std::reverse(items.begin(), items.end());
        if (!value.is(Kind::kString)) return Value::MakeList(std::move(items));
        std::string text;
        for (const Value& c : items) text += c.text;
        return Value::String(std::move(text));
      }
      if (items.empty()) return Value::Undefined(absl::StrCat("|", name, " of an empty sequence"));
      return name == "first" ? items.front() : items.back();
    }
    if (name == "items") {
      if (!value.is(Kind::kDict))
        Fail(absl::StrCat("|items needs a dict, got a ", TypeName(value)));
      List out;
      for (const auto& [key, item] : *value.dict)
        out.push_back(Value::MakeList({Value::String(key), item}));
      return Value::MakeList(std::move(out));
    }
    if (name == "int") {
      if (value.is(Kind::kInt)) return value;
      if (value.numeric()) return Value::Int(static_cast<int64_t>(value.AsDouble()));
      if (value.is(Kind::kString)) {
        char* end = nullptr;
        const std::string stripped = Strip(value.text, true, true);
        const long long parsed = std::strtoll(stripped.c_str(), &end, 10);
        return Value::Int(end != nullptr && *end == '\0' && !stripped.empty() ? parsed : 0);
      }
      return Value::Int(0);
    }
    RequireDefined(value);
    const std::string text = Str(value);
    if (name == "trim") return Value::String(Strip(text, true, true));
    if (name == "upper")
      return Value::String(MapAscii(text, [](int c) { return std::toupper(c); }));
    if (name == "lower")
      return Value::String(MapAscii(text, [](int c) { return std::tolower(c); }));
    if (name == "capitalize") return Value::String(Capitalize(text));
    if (name == "title") return Value::String(Title(text));
    Fail(absl::StrCat("unsupported filter '", name, "'"));
  }

  bool Test(const Expr& test) {
    const Value value = Eval(*test.args[0]);
    const std::string& name = test.name;
    if (name == "defined") return !value.is(Kind::kUndefined);
    if (name == "undefined") return value.is(Kind::kUndefined);
    if (name == "none") return value.is(Kind::kNone);
    if (name == "string") return value.is(Kind::kString);
    if (name == "number") return value.is(Kind::kInt) || value.is(Kind::kFloat);
    if (name == "integer") return value.is(Kind::kInt);
    if (name == "boolean") return value.is(Kind::kBool);
    if (name == "true") return value.is(Kind::kBool) && value.boolean;
    if (name == "false") return value.is(Kind::kBool) && !value.boolean;
    if (name == "mapping") return value.is(Kind::kDict);
    if (name == "sequence")
      return value.is(Kind::kList) || value.is(Kind::kString) || value.is(Kind::kDict);
    if (name == "iterable")
      return value.is(Kind::kList) || value.is(Kind::kString) || value.is(Kind::kDict);
    if (name == "even" || name == "odd") {
      if (!value.is(Kind::kInt)) Fail(absl::StrCat("'is ", name, "' needs an integer"));
      return (value.integer % 2 == 0) == (name == "even");
    }
    Fail(absl::StrCat("unsupported test '", name, "'"));
  }

  bool Contains(const Value& container, const Value& item) const {
    switch (container.kind) {
      case Kind::kString:
        if (!item.is(Kind::kString)) Fail("'in <string>' needs a string on the left");
        return container.text.find(item.text) != std::string::npos;
      case Kind::kList:
        return std::any_of(container.list->begin(), container.list->end(),
                           [&](const Value& v) { return Equal(v, item); });
      case Kind::kDict:
        return item.is(Kind::kString) && container.Find(item.text) != nullptr;
      case Kind::kUndefined:
        RequireDefined(container);
        return false;
      default:
        Fail(absl::StrCat("'in' needs a string, list or dict, got a ", TypeName(container)));
    }
  }

  bool CompareOp(const std::string& op, const Value& a, const Value& b) const {
    if (op == "==") return Equal(a, b);
    if (op == "!=") return !Equal(a, b);
    if (op == "in") return Contains(b, a);
    if (op == "not in") return !Contains(b, a);
    const int order = Order(a, b);
    if (op == "<") return order < 0;
    if (op == ">") return order > 0;
    if (op == "<=") return order <= 0;
    return order >= 0;
  }

  Value Arithmetic(const std::string& op, const Value& a, const Value& b) const {
    if (op == "~") return Value::String(Str(a) + Str(b));
    RequireDefined(a);
    RequireDefined(b);
    if (op == "+" && a.is(Kind::kString) && b.is(Kind::kString))
      return Value::String(a.text + b.text);
    if (op == "+" && a.is(Kind::kList) && b.is(Kind::kList)) {
      List items = *a.list;
      items.insert(items.end(), b.list->begin(), b.list->end());
      return Value::MakeList(std::move(items));
    }
    if (op == "*" && a.is(Kind::kString) && b.is(Kind::kInt)) {
      std::string out;
      for (int64_t i = 0; i < b.integer; ++i) out += a.text;
      return Value::String(out);
    }
    if (!a.numeric() || !b.numeric()) {
      Fail(absl::StrCat("unsupported operand types for ", op, ": ", TypeName(a), " and ",
                        TypeName(b)));
    }
    const bool integers = !a.is(Kind::kFloat) && !b.is(Kind::kFloat);
    const double x = a.AsDouble(), y = b.AsDouble();
    const int64_t i = a.is(Kind::kBool) ? a.boolean : a.integer;
    const int64_t j = b.is(Kind::kBool) ? b.boolean : b.integer;
    if ((op == "/" || op == "//" || op == "%") && y == 0) Fail("division by zero");
    if (op == "+") return integers ? Value::Int(i + j) : Value::Float(x + y);
    if (op == "-") return integers ? Value::Int(i - j) : Value::Float(x - y);
    if (op == "*") return integers ? Value::Int(i * j) : Value::Float(x * y);
    if (op == "/") return Value::Float(x / y);
    if (op == "//") {
      if (!integers) return Value::Float(std::floor(x / y));
      int64_t q = i / j;
      if ((i % j != 0) && ((i < 0) != (j < 0))) --q;
      return Value::Int(q);
    }
    if (op == "%") {
      if (!integers) return Value::Float(x - y * std::floor(x / y));
      int64_t r = i % j;
      if (r != 0 && ((r < 0) != (j < 0))) r += j;
      return Value::Int(r);
    }
    if (integers && j >= 0) {
      int64_t p = 1;
      for (int64_t k = 0; k < j; ++k) p *= i;
      return Value::Int(p);
    }
    return Value::Float(std::pow(x, y));
  }

  Value Eval(const Expr& expr) {
    switch (expr.type) {
      case Expr::Type::kLiteral:
        return expr.literal;
      case Expr::Type::kName:
        return Lookup(expr.name);
      case Expr::Type::kList: {
        List items;
        for (const ExprPtr& item : expr.args) items.push_back(Eval(*item));
        return Value::MakeList(std::move(items));
      }
      case Expr::Type::kDict: {
        Dict items;
        for (size_t i = 0; i + 1 < expr.args.size(); i += 2) {
          Value key = Eval(*expr.args[i]);
          if (!key.is(Kind::kString)) Fail("dict keys must be strings here");
          Assign(items, key.text, Eval(*expr.args[i + 1]));
        }
        return Value::MakeDict(std::move(items));
      }
      case Expr::Type::kAttr:
        return Attribute(Eval(*expr.args[0]), expr.name);
      case Expr::Type::kItem:
        return Item(Eval(*expr.args[0]), Eval(*expr.args[1]));
      case Expr::Type::kSlice:
        return Slice(Eval(*expr.args[0]), expr);
      case Expr::Type::kCall:
        return Call(expr);
      case Expr::Type::kFilter:
        return Filter(expr);
      case Expr::Type::kTest:
        return Value::Bool(Test(expr) != expr.negated);
      case Expr::Type::kNot:
        return Value::Bool(!Truthy(Eval(*expr.args[0])));
      case Expr::Type::kNeg: {
        Value value = Eval(*expr.args[0]);
        if (value.is(Kind::kInt) || value.is(Kind::kBool))
          return Value::Int(-(value.is(Kind::kBool) ? value.boolean : value.integer));
        if (value.is(Kind::kFloat)) return Value::Float(-value.number);
        Fail(absl::StrCat("cannot negate a ", TypeName(value)));
      }
      case Expr::Type::kBinary:
        return Arithmetic(expr.name, Eval(*expr.args[0]), Eval(*expr.args[1]));
      case Expr::Type::kCompare: {
        Value left = Eval(*expr.args[0]);
        for (size_t i = 0; i < expr.ops.size(); ++i) {
          Value right = Eval(*expr.args[i + 1]);
          if (!CompareOp(expr.ops[i], left, right)) return Value::Bool(false);
          left = std::move(right);
        }
        return Value::Bool(true);
      }
      case Expr::Type::kAnd: {
        Value left = Eval(*expr.args[0]);
        return Truthy(left) ? Eval(*expr.args[1]) : left;
      }
      case Expr::Type::kOr: {
        Value left = Eval(*expr.args[0]);
        return Truthy(left) ? left : Eval(*expr.args[1]);
      }
      case Expr::Type::kCond:
        if (Truthy(Eval(*expr.args[1]))) return Eval(*expr.args[0]);
        return expr.args[2] != nullptr ? Eval(*expr.args[2])
                                       : Value::Undefined("an inline if without else");
    }
    return Value::Undefined("?");
  }

  const std::string& origin_;
  std::vector<Dict> scopes_;
  int line_ = 0;
};

}  // namespace

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
    result.root_ =
        TemplateParser(Lexer(std::move(text), result.origin_).Run(), result.origin_).Run();
  } catch (const TemplateError& error) {
    return absl::InvalidArgumentError(absl::StrCat("chat template ", error.message));
  }
  return result;
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& variables) const {
  Dict globals;
  for (const auto& [name, value] : defaults_.items()) {
    if (!variables.contains(name)) globals.emplace_back(name, FromJson(value));
  }
  for (const auto& [name, value] : variables.items()) globals.emplace_back(name, FromJson(value));
  std::string out;
  try {
    Renderer(origin_, std::move(globals)).Run(*root_, out);
  } catch (const RaisedError& error) {
    return absl::InvalidArgumentError(error.message);
  } catch (const TemplateError& error) {
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
  const std::string config_path = model_dir + "/tokenizer_config.json";
  if (!model_dir.empty() && std::filesystem::exists(config_path)) {
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
