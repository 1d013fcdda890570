#include "server/http/jinja_render.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace sinkserve::server::http::jinja {
namespace {

using NodePtr = std::shared_ptr<Node>;

// Bounds on what a template may build (Python has none; a template that needs more is wrong).
constexpr uint64_t kMaxStringBytes = 16 << 20;
constexpr int64_t kMaxRange = 1 << 20;

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
      if (std::optional<std::string> changed = ChangeCase(method, s)) {
        return Value::String(std::move(*changed));
      }
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
    if (name == "strftime_now") {  // HF's: datetime.now().strftime(format), local time
      ArgCount(name, args, 1, 1);
      const std::time_t now = std::time(nullptr);
      std::tm local{};
      localtime_r(&now, &local);
      char buffer[256];
      const size_t size =
          std::strftime(buffer, sizeof(buffer), StringArg(name, args[0]).c_str(), &local);
      if (size == 0 && !args[0].text.empty()) Fail("strftime_now(): empty, or over 255 bytes");
      return Value::String(std::string(buffer, size));
    }
    ArgCount("range", args, 1, 3);
    for (const Value& arg : args) {
      if (!arg.is(Kind::kInt)) Fail("range(): integers only");
    }
    const int64_t start = args.size() > 1 ? args[0].integer : 0;
    const int64_t stop = args.size() > 1 ? args[1].integer : args[0].integer;
    const int64_t step = args.size() > 2 ? args[2].integer : 1;
    if (step == 0) Fail("range(): step cannot be zero");
    const double count =
        (static_cast<double>(stop) - static_cast<double>(start)) / static_cast<double>(step);
    if (count > kMaxRange) Fail(absl::StrCat("range(): over ", kMaxRange, " items"));
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
    if (name == "tojson") {
      JsonStyle style;
      for (const auto& [key, expr] : filter.kwargs) {
        const Value option = Eval(*expr);
        if (key == "sort_keys") {
          style.sort_keys = Truthy(option);
        } else if (option.is(Kind::kInt) && option.integer >= 0 && option.integer <= 64) {
          style.indent = static_cast<int>(option.integer);
        } else if (!option.is(Kind::kNone)) {
          Fail("tojson(indent=...): an integer from 0 to 64, or none");
        }
      }
      return Value::String(Written(value, true, style));
    }
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
    if (std::optional<std::string> changed = ChangeCase(name, text)) {
      return Value::String(std::move(*changed));
    }
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
      if (b.integer > 0 && a.text.size() * static_cast<uint64_t>(b.integer) > kMaxStringBytes) {
        Fail("string repetition over 16 MiB");
      }
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
    // Python's integers have no bounds; ours are 64-bit, and overflowing is an error.
    auto checked = [&](bool overflow, int64_t result) {
      if (overflow) Fail(absl::StrCat("integer overflow in ", i, " ", op, " ", j));
      return Value::Int(result);
    };
    if (integers && (op == "+" || op == "-" || op == "*")) {
      int64_t result = 0;
      const bool overflow = op == "+"   ? __builtin_add_overflow(i, j, &result)
                            : op == "-" ? __builtin_sub_overflow(i, j, &result)
                                        : __builtin_mul_overflow(i, j, &result);
      return checked(overflow, result);
    }
    if (op == "+") return Value::Float(x + y);
    if (op == "-") return Value::Float(x - y);
    if (op == "*") return Value::Float(x * y);
    if (integers && (op == "//" || op == "%") && i == std::numeric_limits<int64_t>::min() &&
        j == -1) {
      return checked(true, 0);
    }
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
    if (integers && j >= 0) {  // by squaring
      int64_t power = 1, base = i;
      bool overflow = false;
      for (int64_t e = j; e > 0 && !overflow; e >>= 1) {
        if (e & 1) overflow = __builtin_mul_overflow(power, base, &power);
        if (e > 1 && !overflow) overflow = __builtin_mul_overflow(base, base, &base);
      }
      return checked(overflow, power);
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

void RenderTemplate(const Node& root, const std::string& origin, Dict globals, std::string* out) {
  Renderer(origin, std::move(globals)).Run(root, *out);
}

}  // namespace sinkserve::server::http::jinja
