// The syntax of our Jinja interpreter (chat_template.h): a template's text split into text and
// tags with Jinja's whitespace control (trim_blocks and lstrip_blocks on, as HF sets them),
// and parsed into statements (Node) and expressions (Expr). Syntax outside the subset is a
// TemplateError naming the origin and line.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "server/http/jinja_value.h"

namespace sinkserve::server::http::jinja {

struct Expr;
using ExprPtr = std::shared_ptr<const Expr>;

// An expression: a literal, a name, a list/dict display, an attribute, subscript or slice, a
// call, a filter or test, or an operator on `args`.
struct Expr {
  // clang-format off
  enum class Type {
    kLiteral, kName, kList, kDict, kAttr, kItem, kSlice, kCall, kFilter, kTest, kNot, kNeg,
    kBinary, kCompare, kAnd, kOr, kCond
  } type = Type::kLiteral;
  // clang-format on
  std::string name;  // a name, attribute, operator, filter or test
  Value literal;
  std::vector<ExprPtr> args;  // operands (nullptr: an omitted slice bound)
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;  // kCompare: the operators between args
  bool negated = false;          // kTest: `is not`
};

// A statement, or a body of them.
struct Node {
  enum class Type { kBody, kText, kOutput, kIf, kFor, kSet, kBreak, kContinue } type = Type::kBody;
  int line = 0;
  std::string text;  // kText
  // kOutput: [value]; kIf: the conditions; kFor: [iterable, filter or nullptr]; kSet: [value].
  std::vector<ExprPtr> exprs;
  // kBody: the statements; kIf: a body per condition (+ the else body); kFor: [body, else body].
  std::vector<std::shared_ptr<Node>> body;
  std::vector<std::string> targets;  // kFor: loop variables; kSet: [name] or [namespace, attribute]
};

// Parses a template (newlines already \n); throws TemplateError ("ORIGIN:LINE: what").
std::shared_ptr<const Node> ParseTemplate(const std::string& source, const std::string& origin);

}  // namespace sinkserve::server::http::jinja
