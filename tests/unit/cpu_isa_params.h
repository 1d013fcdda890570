// Tests of the CPU kernels run once per kernel set (cpu::CpuIsa): on a CPU without a set,
// its tests skip and say so (they never pass without running).
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "engine/cpu/cpu_isa.h"

namespace sinkserve::testing {

// Every set but kAuto (which is one of them).
inline const auto kCpuIsas =
    ::testing::Values(cpu::CpuIsa::kAvx512, cpu::CpuIsa::kAvx2, cpu::CpuIsa::kPortable);

// The --cpu-isa spelling, for test names: avx512, avx2, portable.
inline std::string CpuIsaFlag(cpu::CpuIsa isa) {
  switch (isa) {
    case cpu::CpuIsa::kAvx512:
      return "avx512";
    case cpu::CpuIsa::kAvx2:
      return "avx2";
    case cpu::CpuIsa::kPortable:
      return "portable";
    default:
      return "auto";
  }
}

inline std::string CpuIsaTestName(const ::testing::TestParamInfo<cpu::CpuIsa>& info) {
  return CpuIsaFlag(info.param);
}

}  // namespace sinkserve::testing

// In a test's body (or SetUp): skips the test where this CPU lacks `isa`'s instructions.
#define SKIP_UNLESS_CPU_SUPPORTS(isa)                                                   \
  do {                                                                                  \
    if (!::sinkserve::cpu::CpuSupports(isa)) {                                          \
      GTEST_SKIP() << "this CPU lacks the " << ::sinkserve::testing::CpuIsaFlag(isa)    \
                   << " instructions (or the OS does not enable their registers)";      \
    }                                                                                   \
  } while (false)
