// The serving clock: request arrivals and deadlines, sessions' last use and expiry.
#pragma once

#include <chrono>

namespace sinkserve {

using SteadyClock = std::chrono::steady_clock;

}  // namespace sinkserve
