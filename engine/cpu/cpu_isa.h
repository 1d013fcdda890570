// The instruction sets the CPU kernels are built for (--cpu-isa), and which of them this CPU
// runs: CPUID for the instructions, XGETBV for the OS saving the registers they use.
#pragma once

#include <optional>
#include <string_view>

namespace sinkserve::cpu {

// A set of kernels. kAuto: the best one this CPU runs (kAvx512, else kAvx2, else kPortable).
enum class CpuIsa { kAuto, kAvx512, kAvx2, kPortable };

// "auto", "avx512", "avx2" or "portable"; nullopt for anything else.
std::optional<CpuIsa> ParseCpuIsa(std::string_view name);

// Whether this CPU and OS run `isa`'s kernels (kAuto and kPortable: always).
//   kAvx512: AVX-512 F, BW, VL and DQ, with FMA and F16C, zmm state enabled by the OS;
//   kAvx2: AVX2, FMA and F16C, ymm state enabled by the OS.
bool CpuSupports(CpuIsa isa);

// Whether this CPU has AVX-512 VNNI (vpdpbusd) on top of kAvx512: the int8-activation kernels
// of engine/cpu/int8_activations.h use it; the kAvx512 set does not need it.
bool CpuHasAvx512Vnni();

// kAuto → the best isa CpuSupports; any other isa as it is.
CpuIsa ResolveCpuIsa(CpuIsa isa);

// What `isa`'s kernels use, as banners show it: "avx512f+bw+vl+dq", "avx2+fma+f16c",
// "portable" (kAuto: the resolved isa's name).
const char* CpuIsaName(CpuIsa isa);

}  // namespace sinkserve::cpu
