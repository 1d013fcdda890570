// libFuzzer target for the safetensors reader: SafetensorsFile::FromBytes on arbitrary bytes.
// For every tensor it returns, every byte of its view is read (so ASan reports a view that
// leaves the input) and the reader's promises are checked: the view is inside the input, nbytes
// is numel * element size, names are sorted and unique, and Find finds each tensor.
//
//   ./safetensors_fuzz -max_total_time=60 corpus-work tests/fuzz/corpus/safetensors_fuzz
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

#include "engine/format/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  auto file = sinkserve::SafetensorsFile::FromBytes(bytes, "fuzz");
  if (!file.ok()) {
    // Every refusal names the file.
    if (file.status().message().find("fuzz") == std::string::npos) std::abort();
    return 0;
  }
  const std::string* previous_name = nullptr;
  for (const sinkserve::TensorInfo& t : (*file)->tensors()) {
    if (t.data < bytes.data() || t.nbytes > static_cast<size_t>(bytes.data() + size - t.data)) {
      std::abort();
    }
    if (t.numel() < 0 ||
        static_cast<uint64_t>(t.numel()) * sinkserve::DTypeSize(t.dtype) != t.nbytes) {
      std::abort();
    }
    if (previous_name != nullptr && !(*previous_name < t.name)) std::abort();
    previous_name = &t.name;
    if ((*file)->Find(t.name) != &t) std::abort();
    volatile unsigned char sink = 0;
    for (size_t i = 0; i < t.nbytes; ++i) sink = sink ^ static_cast<unsigned char>(t.data[i]);
    (void)sink;
  }
  return 0;
}
