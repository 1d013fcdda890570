// sinkserve: the command-line entry point. Dispatches to a subcommand.
#include <cstdio>
#include <cstring>
#include <string>

#include "server/cli/commands.h"

namespace {

constexpr char kUsage[] =
    "sinkserve — GPT-NeoX / Pythia inference with streaming KV caches\n"
    "\n"
    "usage: sinkserve <command> [flags]     (sinkserve <command> --help for its flags)\n"
    "\n"
    "commands:\n"
    "  generate     stream a continuation of a prompt\n"
    "  perplexity   per-token perplexity of a text (token-by-token protocol)\n"
    "  tokenize     print the token ids of a text\n"
    "\n"
    "With no --model, commands use the built-in demo model (random weights).\n"
    "Real models: a Hugging Face GPT-NeoX directory, e.g. EleutherAI/pythia-160m\n"
    "(config.json, model.safetensors, tokenizer.json).\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  // Subcommands parse argv after their name.
  if (command == "generate") return sinkserve::cli::RunGenerate(argc - 2, argv + 2);
  if (command == "perplexity") return sinkserve::cli::RunPerplexity(argc - 2, argv + 2);
  if (command == "tokenize") return sinkserve::cli::RunTokenize(argc - 2, argv + 2);
  std::fprintf(stderr, "error: unknown command \"%s\"\n\n%s", command.c_str(), kUsage);
  return 2;
}
