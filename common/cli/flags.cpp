#include "common/cli/flags.h"

#include <charconv>
#include <cmath>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace sinkserve::cli {

Flags::Flags(std::string command, std::string summary, std::string program)
    : command_(std::move(command)), summary_(std::move(summary)), program_(std::move(program)) {}

void Flags::Add(const std::string& name, std::string* value, const std::string& help) {
  flags_.push_back({name, Kind::kString, value, help, value->empty() ? "" : "\"" + *value + "\""});
}
void Flags::Add(const std::string& name, int64_t* value, const std::string& help) {
  flags_.push_back({name, Kind::kInt, value, help, std::to_string(*value)});
}
void Flags::Add(const std::string& name, double* value, const std::string& help) {
  std::ostringstream text;
  text << *value;
  flags_.push_back({name, Kind::kDouble, value, help, text.str()});
}
void Flags::Add(const std::string& name, bool* value, const std::string& help) {
  flags_.push_back({name, Kind::kBool, value, help, *value ? "true" : ""});
}
void Flags::Add(const std::string& name, std::vector<std::string>* values,
                const std::string& help) {
  flags_.push_back({name, Kind::kStringList, values, help + " (repeatable)", ""});
}

Flags::Flag* Flags::Find(const std::string& name) {
  for (Flag& flag : flags_) {
    if (flag.name == name) return &flag;
  }
  return nullptr;
}

bool Flags::was_set(const std::string& name) const {
  for (const Flag& flag : flags_) {
    if (flag.name == name) return flag.set;
  }
  return false;
}

absl::Status Flags::Assign(Flag& flag, const std::string& text) {
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  switch (flag.kind) {
    case Kind::kString:
      *static_cast<std::string*>(flag.value) = text;
      break;
    case Kind::kStringList:
      static_cast<std::vector<std::string>*>(flag.value)->push_back(text);
      break;
    case Kind::kInt: {
      int64_t parsed = 0;
      auto [ptr, error] = std::from_chars(begin, end, parsed);
      if (error != std::errc() || ptr != end) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", flag.name, " expects an integer, got \"", text, "\""));
      }
      *static_cast<int64_t*>(flag.value) = parsed;
      break;
    }
    case Kind::kDouble: {
      double parsed = 0;
      auto [ptr, error] = std::from_chars(begin, end, parsed);
      if (error != std::errc() || ptr != end || !std::isfinite(parsed)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", flag.name, " expects a number, got \"", text, "\""));
      }
      *static_cast<double*>(flag.value) = parsed;
      break;
    }
    case Kind::kBool:
      if (text == "true" || text == "1") {
        *static_cast<bool*>(flag.value) = true;
      } else if (text == "false" || text == "0") {
        *static_cast<bool*>(flag.value) = false;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("--", flag.name, " expects true or false, got \"", text, "\""));
      }
      break;
  }
  flag.set = true;
  return absl::OkStatus();
}

absl::Status Flags::Parse(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help_requested_ = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unexpected argument \"", arg, "\"; flags start with --. See: ", program_, " ", command_,
          " --help"));
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    Flag* flag = Find(name);
    if (flag == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " for ", program_, " ",
                                                     command_, "; see: ", program_, " ", command_,
                                                     " --help"));
    }
    if (!has_value) {
      if (flag->kind == Kind::kBool) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
    }
    if (absl::Status status = Assign(*flag, value); !status.ok()) return status;
  }
  return absl::OkStatus();
}

std::string Flags::Usage() const {
  std::string usage = absl::StrCat("usage: ", program_, " ", command_, " [flags]\n\n", summary_,
                                   "\n\nflags:\n");
  for (const Flag& flag : flags_) {
    std::string left = "  --" + flag.name;
    if (flag.kind != Kind::kBool) {
      left += flag.kind == Kind::kString || flag.kind == Kind::kStringList ? " TEXT" : " N";
    }
    if (left.size() < 28) left.resize(28, ' ');
    absl::StrAppend(&usage, left, " ", flag.help);
    if (!flag.default_text.empty()) absl::StrAppend(&usage, " (default ", flag.default_text, ")");
    usage += "\n";
  }
  return usage;
}

}  // namespace sinkserve::cli
