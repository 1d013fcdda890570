// sinkserve: the command-line entry point. Dispatches to a subcommand.
#include <cstdio>
#include <cstring>
#include <string>

#include "server/cli/commands.h"

namespace {

constexpr char kUsage[] =
    "sinkserve — GPT-NeoX / Pythia inference with streaming KV caches\n"
    "\n"
    "usage: sinkserve [<command>] [flags]   (sinkserve <command> --help for its flags)\n"
    "\n"
    "commands:\n"
    "  serve        the gRPC server (:50051) with Prometheus metrics (:9464); the default\n"
    "  generate     stream a continuation of a prompt\n"
    "  perplexity   per-token perplexity of a text (token-by-token protocol)\n"
    "  tokenize     print the token ids of a text\n"
    "  convert      write a checkpoint's weights (e.g. pytorch_model.bin) as model.safetensors\n"
    "  chat-template  print the prompt a chat template renders for a messages file\n"
    "  health       ask a running server's grpc.health.v1 (exit 0 when SERVING)\n"
    "\n"
    "With no command, sinkserve serves; with no --model, the built-in demo model (random\n"
    "weights).\n"
    "Real models: a Hugging Face GPT-NeoX directory, e.g. EleutherAI/pythia-160m\n"
    "(config.json, model.safetensors or pytorch_model.bin, tokenizer.json), or its folder in\n"
    "the Hugging Face cache (~/.cache/huggingface/hub/models--EleutherAI--pythia-160m).\n";

}  // namespace

int main(int argc, char** argv) {
  // No command: serve the built-in demo model (docs/api.md), or serve with the given flags.
  if (argc < 2 || std::strncmp(argv[1], "--", 2) == 0) {
    if (argc >= 2 && (std::strcmp(argv[1], "--help") == 0)) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    return sinkserve::cli::RunServe(argc - 1, argv + 1);
  }
  if (std::strcmp(argv[1], "-h") == 0 || std::strcmp(argv[1], "help") == 0) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const std::string command = argv[1];
  // Subcommands parse argv after their name.
  if (command == "serve") return sinkserve::cli::RunServe(argc - 2, argv + 2);
  if (command == "generate") return sinkserve::cli::RunGenerate(argc - 2, argv + 2);
  if (command == "perplexity") return sinkserve::cli::RunPerplexity(argc - 2, argv + 2);
  if (command == "tokenize") return sinkserve::cli::RunTokenize(argc - 2, argv + 2);
  if (command == "convert") return sinkserve::cli::RunConvert(argc - 2, argv + 2);
  if (command == "chat-template") return sinkserve::cli::RunChatTemplate(argc - 2, argv + 2);
  if (command == "health") return sinkserve::cli::RunHealth(argc - 2, argv + 2);
  std::fprintf(stderr, "error: unknown command \"%s\"\n\n%s", command.c_str(), kUsage);
  return 2;
}
