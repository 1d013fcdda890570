// libFuzzer target for the pytorch_model.bin reader (engine/format/torch_checkpoint.h).
//
// The first byte picks what the rest is:
//   even: a whole file, given to TorchCheckpointFile::FromBytes (the zip layer and everything
//         behind it);
//   odd:  a data.pkl, wrapped here in a valid torch.save zip (stored entries, right CRC-32s)
//         with storages archive/data/0 and archive/data/1 of 64 bytes each, so that mutations
//         reach the unpickler and the tensor views instead of dying at the zip's checksums.
// For every tensor returned, every byte of its view is read (ASan reports a view that leaves
// its storage) and the reader's promises are checked: nbytes is numel * element size, names
// are sorted and unique, Find finds each tensor, and a view into the file lies inside it.
//
// Corpus (tests/fuzz/corpus/torch_checkpoint_fuzz): files written by torch.save (0x00 + the
// file) and their data.pkl (0x01 + the pickle, protocols 2 and 4, views of one 16-element
// F32 storage and a 32-element BF16 one).
//
//   ./torch_checkpoint_fuzz -max_total_time=60 corpus-work tests/fuzz/corpus/torch_checkpoint_fuzz
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/format/torch_checkpoint.h"

namespace {

uint32_t Crc32(std::string_view data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char c : data) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

void Put(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>(value >> (8 * i)));
}

// A zip of stored entries, as torch.save writes them (without its 64-byte alignment).
std::string StoredZip(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string out, directory;
  for (const auto& [name, data] : entries) {
    const uint64_t offset = out.size();
    const uint32_t crc = Crc32(data);
    Put(out, 0x04034b50, 4);  // local file header
    Put(out, 20, 2);          // version needed
    Put(out, 0, 2);           // flags
    Put(out, 0, 2);           // stored
    Put(out, 0, 4);           // time, date
    Put(out, crc, 4);
    Put(out, data.size(), 4);
    Put(out, data.size(), 4);
    Put(out, name.size(), 2);
    Put(out, 0, 2);  // extra
    out += name;
    out += data;
    Put(directory, 0x02014b50, 4);  // central directory header
    Put(directory, 20, 2);          // made by
    Put(directory, 20, 2);          // needed
    Put(directory, 0, 2);
    Put(directory, 0, 2);
    Put(directory, 0, 4);
    Put(directory, crc, 4);
    Put(directory, data.size(), 4);
    Put(directory, data.size(), 4);
    Put(directory, name.size(), 2);
    Put(directory, 0, 2);  // extra
    Put(directory, 0, 2);  // comment
    Put(directory, 0, 2);  // disk
    Put(directory, 0, 2);  // internal attributes
    Put(directory, 0, 4);  // external attributes
    Put(directory, offset, 4);
    directory += name;
  }
  const uint64_t directory_offset = out.size();
  out += directory;
  Put(out, 0x06054b50, 4);  // end of central directory
  Put(out, 0, 4);           // disks
  Put(out, entries.size(), 2);
  Put(out, entries.size(), 2);
  Put(out, directory.size(), 4);
  Put(out, directory_offset, 4);
  Put(out, 0, 2);  // comment
  return out;
}

void Check(std::span<const std::byte> input, const sinkserve::TorchCheckpointFile& file) {
  const std::string* previous_name = nullptr;
  for (const sinkserve::TensorInfo& t : file.tensors()) {
    if (t.numel() < 0 ||
        static_cast<uint64_t>(t.numel()) * sinkserve::DTypeSize(t.dtype) != t.nbytes) {
      std::abort();
    }
    if (previous_name != nullptr && !(*previous_name < t.name)) std::abort();
    previous_name = &t.name;
    if (file.Find(t.name) != &t) std::abort();
    if (t.nbytes > 0 && file.InFile(t.data) &&
        t.nbytes > static_cast<size_t>(input.data() + input.size() - t.data)) {
      std::abort();
    }
    volatile unsigned char sink = 0;
    for (size_t i = 0; i < t.nbytes; ++i) sink = sink ^ static_cast<unsigned char>(t.data[i]);
    (void)sink;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string wrapped;
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data) + 1, size - 1);
  if (data[0] & 1) {
    const std::string storage(64, '\x3c');
    wrapped = StoredZip({{"archive/data.pkl", std::string(reinterpret_cast<const char*>(data) + 1,
                                                          size - 1)},
                         {"archive/byteorder", "little"},
                         {"archive/data/0", storage},
                         {"archive/data/1", storage}});
    bytes = {reinterpret_cast<const std::byte*>(wrapped.data()), wrapped.size()};
  }
  auto file = sinkserve::TorchCheckpointFile::FromBytes(bytes, "fuzz.bin");
  if (!file.ok()) {
    // Every refusal names the file.
    if (file.status().message().find("fuzz.bin") == std::string::npos) std::abort();
    return 0;
  }
  Check(bytes, **file);
  return 0;
}
