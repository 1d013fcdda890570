// The subcommands of sinkserve-bench. Each returns the exit code: 0 ok, 1 runtime error
// (server unreachable, a run cut short), 2 usage error.
#pragma once

namespace sinkserve::bench {

int RunLoadCommand(int argc, char** argv);   // client/load_command.cpp
int RunPplCommand(int argc, char** argv);    // client/ppl_command.cpp
int RunTableCommand(int argc, char** argv);  // client/table_command.cpp

}  // namespace sinkserve::bench
