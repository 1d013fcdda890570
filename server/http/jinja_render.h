// The evaluation of a parsed template (jinja_syntax.h) with its globals, as jinja2 renders it:
// Python's semantics (jinja_value.h), a for loop's body a scope of its own per iteration (a
// `set` there stays there; namespace() objects carry values out), the filters, tests, methods
// and functions the parser admits.
#pragma once

#include <string>

#include "server/http/jinja_syntax.h"
#include "server/http/jinja_value.h"

namespace sinkserve::server::http::jinja {

// What the template's raise_exception(message) throws.
struct RaisedError {
  std::string message;
};

// Appends the rendering to *out. Throws RaisedError, or TemplateError ("ORIGIN:LINE: what") on
// an evaluation error (an undefined value used, a wrong type).
void RenderTemplate(const Node& root, const std::string& origin, Dict globals, std::string* out);

}  // namespace sinkserve::server::http::jinja
