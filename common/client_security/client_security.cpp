#include "common/client_security/client_security.h"

#include "absl/strings/str_cat.h"
#include "common/base/file.h"
#include "common/cli/token_file.h"

namespace sinkserve {

void ClientSecurity::AddTo(cli::Flags& flags, bool token) {
  flags.Add("tls-ca", &tls_ca,
            "PEM CA certificate(s) the server's TLS certificate must chain to; set = TLS, "
            "empty = plaintext");
  flags.Add("tls-cert", &tls_cert, "PEM client certificate chain (mutual TLS; with --tls-key)");
  flags.Add("tls-key", &tls_key, "PEM private key of --tls-cert");
  flags.Add("tls-server-name", &tls_server_name,
            "the name the server's certificate must carry, when the address's host is not it "
            "(e.g. 127.0.0.1 inside a container)");
  if (token) {
    flags.Add("auth-token-file", &auth_token_file,
              "file whose first line is the server's bearer token (sent as 'authorization: "
              "Bearer ...')");
  }
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> ClientSecurity::Channel(
    const std::string& address) const {
  if (tls_cert.empty() != tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (tls_ca.empty()) {
    if (!tls_cert.empty() || !tls_server_name.empty()) {
      return absl::InvalidArgumentError("--tls-cert and --tls-server-name need --tls-ca");
    }
    return grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  }
  grpc::SslCredentialsOptions options;
  for (auto [path, pem] :
       {std::pair{&tls_ca, &options.pem_root_certs}, std::pair{&tls_cert, &options.pem_cert_chain},
        std::pair{&tls_key, &options.pem_private_key}}) {
    if (path->empty()) continue;
    absl::StatusOr<std::string> contents = ReadFile(*path);
    if (!contents.ok()) return contents.status();
    *pem = *std::move(contents);
  }
  grpc::ChannelArguments arguments;
  if (!tls_server_name.empty()) arguments.SetSslTargetNameOverride(tls_server_name);
  return grpc::CreateCustomChannel(address, grpc::SslCredentials(options), arguments);
}

absl::StatusOr<std::string> ClientSecurity::Authorization() const {
  if (auth_token_file.empty()) return std::string();
  absl::StatusOr<std::string> token = cli::ReadTokenFile(auth_token_file);
  if (!token.ok()) return token.status();
  return absl::StrCat("Bearer ", *token);
}

}  // namespace sinkserve
