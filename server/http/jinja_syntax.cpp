#include "server/http/jinja_syntax.h"

#include <algorithm>
#include <cctype>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace sinkserve::server::http::jinja {
namespace {

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
      // An exponent: 1e5, 2.5E-3.
      const auto digit = [&](size_t k) {
        return k < body.size() && std::isdigit(static_cast<unsigned char>(body[k]));
      };
      if (j < body.size() && (body[j] == 'e' || body[j] == 'E')) {
        const size_t sign = j + 1 < body.size() && (body[j + 1] == '+' || body[j + 1] == '-');
        if (digit(j + 1 + sign)) {
          is_float = true;
          for (j += 1 + sign; digit(j); ++j) {
          }
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
  static const std::vector<std::string_view> kFunctions = {"raise_exception", "namespace", "range",
                                                           "strftime_now"};
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
        for (const auto& [key, value] : filter.kwargs) {
          if (filter.name != "tojson" || (key != "indent" && key != "sort_keys")) {
            Fail(absl::StrCat("unsupported: the keyword argument '", key, "' of the filter '",
                              filter.name, "'"));
          }
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

}  // namespace

std::shared_ptr<const Node> ParseTemplate(const std::string& source, const std::string& origin) {
  return TemplateParser(Lexer(source, origin).Run(), origin).Run();
}

}  // namespace sinkserve::server::http::jinja
