#include "common/base/quote.h"

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace sinkserve {

std::string Quote(std::string_view text) {
  constexpr size_t kMaxShown = 120;
  // Debian's Abseil has its own string_view type, which std::string_view does not convert to.
  const absl::string_view shown(text.data(), std::min(text.size(), kMaxShown));
  if (text.size() <= kMaxShown) return absl::StrCat("'", absl::CHexEscape(shown), "'");
  return absl::StrCat("'", absl::CHexEscape(shown), "'... (", text.size(), " bytes)");
}

}  // namespace sinkserve
