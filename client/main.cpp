// sinkserve-bench: load generator, perplexity client and benchmark table for sinkserve.
#include <cstdio>
#include <cstring>
#include <string>

#include "client/commands.h"

namespace {

constexpr char kUsage[] =
    "sinkserve-bench — load generator and benchmark client for a sinkserve server\n"
    "\n"
    "usage: sinkserve-bench <command> [flags]   (sinkserve-bench <command> --help for its flags)\n"
    "\n"
    "commands:\n"
    "  load    Generate streams: closed loop (--concurrency) or open loop (--rate); TTFT, TPOT,\n"
    "          ITL, end-to-end latency percentiles, throughput, goodput, errors\n"
    "  ppl     perplexity of a text file through the Score RPC (token by token, or the seed's\n"
    "          512-token chunk protocol)\n"
    "  table   the benchmark table of docs/benchmark-protocol.md for several servers, running\n"
    "          or spawned one at a time: PPL, throughput, TPOT, attention time, peak memory\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  if (command == "load") return sinkserve::bench::RunLoadCommand(argc - 2, argv + 2);
  if (command == "ppl") return sinkserve::bench::RunPplCommand(argc - 2, argv + 2);
  if (command == "table") return sinkserve::bench::RunTableCommand(argc - 2, argv + 2);
  std::fprintf(stderr, "error: unknown command \"%s\"\n\n%s", command.c_str(), kUsage);
  return 2;
}
