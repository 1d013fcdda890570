// CRC-32C (Castagnoli), the checksum of iSCSI, ext4 and Snappy framing: guards each section of a
// saved session. SSE4.2's crc32 instruction where the CPU has it (~8 GB/s on one core), else a
// table (~0.5 GB/s). Crc32c("123456789") == 0xE3069283.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace sinkserve {

// Continues `crc` (0 to start) over `data`.
uint32_t Crc32c(std::span<const std::byte> data, uint32_t crc = 0);

}  // namespace sinkserve
