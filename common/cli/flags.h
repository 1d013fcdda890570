// Flags: a small command-line parser for the sinkserve subcommands.
//
// Each subcommand declares its flags with a help line; `--help` prints them, an unknown flag
// or a bad value is an error that names the flag and says what was expected.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace sinkserve::cli {

class Flags {
 public:
  // `program` prefixes the usage line ("sinkserve serve", "sinkserve-bench load").
  Flags(std::string command, std::string summary, std::string program = "sinkserve");

  // Declare flags; `value` holds the default and receives the parsed value.
  void Add(const std::string& name, std::string* value, const std::string& help);
  void Add(const std::string& name, int64_t* value, const std::string& help);
  void Add(const std::string& name, double* value, const std::string& help);
  void Add(const std::string& name, bool* value, const std::string& help);  // --name / --name=false
  // A repeatable flag: each occurrence appends one value.
  void Add(const std::string& name, std::vector<std::string>* values, const std::string& help);

  // Parses argv[first..]. Sets help_requested() for --help/-h.
  absl::Status Parse(int argc, char** argv, int first);
  bool help_requested() const { return help_requested_; }
  bool was_set(const std::string& name) const;
  std::string Usage() const;

 private:
  enum class Kind { kString, kInt, kDouble, kBool, kStringList };
  struct Flag {
    std::string name;
    Kind kind;
    void* value;
    std::string help;
    std::string default_text;
    bool set = false;
  };
  Flag* Find(const std::string& name);
  absl::Status Assign(Flag& flag, const std::string& text);

  std::string command_;
  std::string summary_;
  std::string program_;
  std::vector<Flag> flags_;
  bool help_requested_ = false;
};

}  // namespace sinkserve::cli
