// ClientConnection: the TCP connection a request came on, so that a handler waiting for the
// engine notices its client going away and cancels the work (a non-streamed completion, a
// request still queued, an echo being scored). cpp-httplib 0.11 hands handlers no socket, so it
// is found among the process's descriptors by the request's two addresses, which name one
// connection; the handler runs while httplib keeps that connection open.
#pragma once

#include <string>

namespace httplib {
struct Request;
}  // namespace httplib

namespace sinkserve::server::http {

class ClientConnection {
 public:
  ClientConnection() = default;  // none: Closed() is false
  explicit ClientConnection(const httplib::Request& request);

  // True once the client closed the connection, reset it or shut down its sending side (as
  // nginx, a half-close counts as gone: OpenAI clients never half-close to wait for a reply).
  // Data the client sent meanwhile (a pipelined request, TLS records) does not count.
  bool Closed() const;

 private:
  int fd_ = -1;  // -1: not found (Closed() stays false)
};

}  // namespace sinkserve::server::http
