// Device memory with accounting: every byte the CUDA backend holds goes through one
// DeviceAllocator, whose current and peak counts are the gpu_memory_* metrics.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sinkserve::cuda {

class DeviceAllocator {
 public:
  DeviceAllocator() = default;
  DeviceAllocator(const DeviceAllocator&) = delete;
  DeviceAllocator& operator=(const DeviceAllocator&) = delete;
  ~DeviceAllocator();

  // RESOURCE_EXHAUSTED naming `what` and the size when the device is out of memory.
  absl::StatusOr<void*> Allocate(size_t bytes, const std::string& what);
  void Free(void* pointer, size_t bytes);

  // Blocks of the same size are reused (KV caches of one policy, scratch buffers): Release
  // keeps the block for the next Acquire of that size instead of returning it to the driver.
  absl::StatusOr<void*> Acquire(size_t bytes, const std::string& what);
  void Release(void* pointer, size_t bytes);

  // Safe to read from any thread (the metrics exporter).
  uint64_t used_bytes() const { return used_.load(std::memory_order_relaxed); }
  uint64_t peak_bytes() const { return peak_.load(std::memory_order_relaxed); }
  uint64_t pooled_bytes() const { return pooled_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> used_{0};
  std::atomic<uint64_t> peak_{0};
  std::atomic<uint64_t> pooled_{0};  // part of used_: released blocks kept for reuse
  std::map<size_t, std::vector<void*>> free_blocks_;
};

// An owned device array of T (freed through its allocator).
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  DeviceArray(DeviceArray&& other) noexcept { *this = std::move(other); }
  DeviceArray& operator=(DeviceArray&& other) noexcept {
    Reset();
    allocator_ = other.allocator_;
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
    return *this;
  }
  ~DeviceArray() { Reset(); }

  static absl::StatusOr<DeviceArray> Make(DeviceAllocator& allocator, size_t size,
                                          const std::string& what) {
    DeviceArray array;
    absl::StatusOr<void*> pointer = allocator.Allocate(size * sizeof(T), what);
    if (!pointer.ok()) return pointer.status();
    array.allocator_ = &allocator;
    array.data_ = static_cast<T*>(*pointer);
    array.size_ = size;
    return array;
  }

  T* get() const { return data_; }
  size_t size() const { return size_; }
  size_t bytes() const { return size_ * sizeof(T); }
  void Reset() {
    if (data_ != nullptr) allocator_->Free(data_, bytes());
    data_ = nullptr;
    size_ = 0;
  }

 private:
  DeviceAllocator* allocator_ = nullptr;
  T* data_ = nullptr;
  size_t size_ = 0;
};

// Pinned host memory mapped into the device's address space: kernels read it over PCIe, and
// it takes no device memory (not counted by DeviceAllocator). For data a step touches only a
// few bytes of, such as the rows of the input embedding table.
class MappedHostBuffer {
 public:
  MappedHostBuffer() = default;
  MappedHostBuffer(MappedHostBuffer&& other) noexcept { *this = std::move(other); }
  MappedHostBuffer& operator=(MappedHostBuffer&& other) noexcept;
  ~MappedHostBuffer() { Reset(); }

  // A copy of `bytes` bytes at `source` (RESOURCE_EXHAUSTED when pinning fails).
  static absl::StatusOr<MappedHostBuffer> Make(const void* source, size_t bytes,
                                               const std::string& what);
  const void* device_pointer() const { return device_; }
  void Reset();

 private:
  void* host_ = nullptr;
  void* device_ = nullptr;
};

}  // namespace sinkserve::cuda
