#include "client/metrics_scraper.h"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace sinkserve::bench {

namespace {

// `series` without its model_name label: a server serves one model, so within one scrape the
// label names nothing (`x{model_name="m"}` -> `x`, `x{a="1",model_name="m"}` -> `x{a="1"}`).
std::string WithoutModelName(std::string series) {
  const size_t label = series.find("model_name=\"");
  if (label == std::string::npos || (series[label - 1] != '{' && series[label - 1] != ',')) {
    return series;
  }
  size_t end = series.find('"', label + 12);
  while (end != std::string::npos && series[end - 1] == '\\') end = series.find('"', end + 1);
  if (end == std::string::npos) return series;
  size_t begin = label;
  ++end;
  if (series[end] == ',') {
    ++end;  // the comma after it
  } else if (series[begin - 1] == ',') {
    --begin;  // the comma before it
  }
  series.erase(begin, end - begin);
  if (series.ends_with("{}")) series.resize(series.size() - 2);
  return series;
}

}  // namespace

MetricsSnapshot MetricsSnapshot::Parse(const std::string& exposition) {
  MetricsSnapshot snapshot;
  std::istringstream lines(exposition);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    // Label values may hold spaces: the value starts after the closing brace, if any.
    const size_t brace = line.rfind('}');
    const size_t space = line.find(' ', brace == std::string::npos ? 0 : brace);
    if (space == std::string::npos) continue;
    snapshot.values_[WithoutModelName(line.substr(0, space))] =
        std::strtod(line.c_str() + space + 1, nullptr);
  }
  return snapshot;
}

double MetricsSnapshot::Value(const std::string& series) const {
  auto it = values_.find(series);
  return it == values_.end() ? 0.0 : it->second;
}

absl::StatusOr<MetricsSnapshot> ScrapeMetrics(const std::string& host, int port) {
  const std::string where = absl::StrCat("http://", host, ":", port, "/metrics");
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addresses = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &addresses) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot resolve ", where));
  }
  int fd = -1;
  for (addrinfo* address = addresses; address != nullptr && fd < 0; address = address->ai_next) {
    fd = socket(address->ai_family, address->ai_socktype, address->ai_protocol);
    if (fd >= 0 && connect(fd, address->ai_addr, address->ai_addrlen) != 0) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(addresses);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("cannot connect to ", where));
  timeval timeout{.tv_sec = 10, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  const std::string request =
      absl::StrCat("GET /metrics HTTP/1.0\r\nHost: ", host, "\r\nConnection: close\r\n\r\n");
  std::string response;
  if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
    char buffer[16384];
    for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) response.append(buffer, n);
  }
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.", 0) != 0 || response.find(" 200 ") > response.find("\r\n") ||
      body == std::string::npos) {
    return absl::UnavailableError(absl::StrCat(where, " did not answer 200 OK"));
  }
  return MetricsSnapshot::Parse(response.substr(body + 4));
}

}  // namespace sinkserve::bench
