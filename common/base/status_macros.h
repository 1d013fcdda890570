// Early-return helpers for absl::Status / absl::StatusOr at module boundaries
// (docs/conventions.md §5).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define SINKSERVE_CONCAT_INNER(a, b) a##b
#define SINKSERVE_CONCAT(a, b) SINKSERVE_CONCAT_INNER(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    const absl::Status _status = (expr);           \
    if (!_status.ok()) return _status;             \
  } while (0)

// `ASSIGN_OR_RETURN(lhs, expr)`: evaluates the StatusOr `expr`, returns its status on error,
// otherwise moves its value into `lhs` (which may be a declaration).
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(SINKSERVE_CONCAT(_status_or_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(*tmp)
