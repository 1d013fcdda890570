#include "engine/cuda/device_memory.h"

#include <cuda_runtime.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace sinkserve::cuda {

DeviceAllocator::~DeviceAllocator() {
  for (auto& [bytes, blocks] : free_blocks_) {
    for (void* block : blocks) cudaFree(block);
  }
}

absl::StatusOr<void*> DeviceAllocator::Allocate(size_t bytes, const std::string& what) {
  void* pointer = nullptr;
  if (bytes == 0) bytes = 1;  // a valid, unique pointer for empty arrays
  const cudaError_t error = cudaMalloc(&pointer, bytes);
  if (error != cudaSuccess) {
    cudaGetLastError();  // out-of-memory is not sticky: clear it so later calls work
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    return absl::ResourceExhaustedError(absl::StrCat(
        "GPU memory exhausted allocating ", bytes, " bytes for ", what, " (",
        cudaGetErrorString(error), "; ", free_bytes, " of ", total_bytes,
        " bytes free on the device, ", used_bytes(), " held by sinkserve)"));
  }
  const uint64_t used = used_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  uint64_t peak = peak_.load(std::memory_order_relaxed);
  while (used > peak && !peak_.compare_exchange_weak(peak, used, std::memory_order_relaxed)) {
  }
  return pointer;
}

void DeviceAllocator::Free(void* pointer, size_t bytes) {
  if (pointer == nullptr) return;
  cudaFree(pointer);
  used_.fetch_sub(bytes == 0 ? 1 : bytes, std::memory_order_relaxed);
}

absl::StatusOr<void*> DeviceAllocator::Acquire(size_t bytes, const std::string& what) {
  auto it = free_blocks_.find(bytes);
  if (it != free_blocks_.end() && !it->second.empty()) {
    void* pointer = it->second.back();
    it->second.pop_back();
    pooled_.fetch_sub(bytes, std::memory_order_relaxed);
    return pointer;
  }
  return Allocate(bytes, what);
}

void DeviceAllocator::Release(void* pointer, size_t bytes) {
  free_blocks_[bytes].push_back(pointer);
  pooled_.fetch_add(bytes, std::memory_order_relaxed);
}

MappedHostBuffer& MappedHostBuffer::operator=(MappedHostBuffer&& other) noexcept {
  Reset();
  host_ = other.host_;
  device_ = other.device_;
  other.host_ = other.device_ = nullptr;
  return *this;
}

void MappedHostBuffer::Reset() {
  if (host_ != nullptr) cudaFreeHost(host_);
  host_ = device_ = nullptr;
}

absl::StatusOr<MappedHostBuffer> MappedHostBuffer::Make(const void* source, size_t bytes,
                                                        const std::string& what) {
  MappedHostBuffer buffer;
  cudaError_t error = cudaHostAlloc(&buffer.host_, bytes, cudaHostAllocMapped);
  if (error == cudaSuccess) {
    std::memcpy(buffer.host_, source, bytes);
    error = cudaHostGetDevicePointer(&buffer.device_, buffer.host_, 0);
  }
  if (error != cudaSuccess) {
    cudaGetLastError();
    return absl::ResourceExhaustedError(absl::StrCat("pinning ", bytes, " bytes of host memory for ",
                                                     what, " failed: ", cudaGetErrorString(error)));
  }
  return buffer;
}

}  // namespace sinkserve::cuda
