#include "engine/cpu/cpu_isa.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include <cstdint>

namespace sinkserve::cpu {
namespace {

struct Features {
  bool avx2 = false;         // AVX2 + FMA + F16C, ymm state saved by the OS
  bool avx512 = false;       // AVX-512 F/BW/VL/DQ on top of that, zmm and opmask state saved
  bool avx512_vnni = false;  // and AVX-512 VNNI
};

Features Detect() {
  Features f;
#if defined(__x86_64__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return f;
  const bool fma = (ecx & bit_FMA) != 0, f16c = (ecx & bit_F16C) != 0;
  if ((ecx & bit_OSXSAVE) == 0) return f;  // the OS does not save any AVX state
  uint32_t xcr0_low = 0, xcr0_high = 0;
  __asm__("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0));
  const bool ymm_state = (xcr0_low & 0x6) == 0x6;    // SSE + AVX
  const bool zmm_state = (xcr0_low & 0xe6) == 0xe6;  // + opmask, ZMM_Hi256, Hi16_ZMM
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return f;
  f.avx2 = ymm_state && fma && f16c && (ebx & bit_AVX2) != 0;
  const uint32_t avx512 = bit_AVX512F | bit_AVX512BW | bit_AVX512VL | bit_AVX512DQ;
  f.avx512 = f.avx2 && zmm_state && (ebx & avx512) == avx512;
  f.avx512_vnni = f.avx512 && (ecx & bit_AVX512VNNI) != 0;
#endif
  return f;
}

const Features& CpuFeatures() {
  static const Features features = Detect();
  return features;
}

}  // namespace

std::optional<CpuIsa> ParseCpuIsa(std::string_view name) {
  if (name == "auto") return CpuIsa::kAuto;
  if (name == "avx512") return CpuIsa::kAvx512;
  if (name == "avx2") return CpuIsa::kAvx2;
  if (name == "portable") return CpuIsa::kPortable;
  return std::nullopt;
}

bool CpuSupports(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return CpuFeatures().avx512;
    case CpuIsa::kAvx2:
      return CpuFeatures().avx2;
    default:
      return true;
  }
}

bool CpuHasAvx512Vnni() { return CpuFeatures().avx512_vnni; }

CpuIsa ResolveCpuIsa(CpuIsa isa) {
  if (isa != CpuIsa::kAuto) return isa;
  if (CpuSupports(CpuIsa::kAvx512)) return CpuIsa::kAvx512;
  if (CpuSupports(CpuIsa::kAvx2)) return CpuIsa::kAvx2;
  return CpuIsa::kPortable;
}

const char* CpuIsaName(CpuIsa isa) {
  switch (ResolveCpuIsa(isa)) {
    case CpuIsa::kAvx512:
      return "avx512f+bw+vl+dq";
    case CpuIsa::kAvx2:
      return "avx2+fma+f16c";
    default:
      return "portable";
  }
}

}  // namespace sinkserve::cpu
