// The offline subcommands of `sinkserve` (the engine's own face, like llama.cpp's tools).
// Each returns the process exit code: 0 ok, 1 runtime error, 2 usage error.
#pragma once

namespace sinkserve::cli {

int RunGenerate(int argc, char** argv);    // sinkserve generate
int RunTokenize(int argc, char** argv);    // sinkserve tokenize
int RunPerplexity(int argc, char** argv);  // sinkserve perplexity
int RunConvert(int argc, char** argv);     // sinkserve convert (weights to model.safetensors)
int RunServe(int argc,
             char** argv);  // sinkserve serve (the gRPC server; server/cli/serve_command.cpp)
int RunHealth(
    int argc,
    char** argv);  // sinkserve health (grpc.health.v1 probe; server/cli/health_command.cpp)
int RunChatTemplate(int argc, char** argv);  // sinkserve chat-template (render a chat template)

}  // namespace sinkserve::cli
