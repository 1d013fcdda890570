// Read bandwidth of this machine's memory for deploy/bench/vs-llamacpp.sh: THREADS threads
// each sum their slice of a 1 GiB buffer (far larger than the caches); prints the best of
// PASSES passes in GB/s. A decode step that reads B bytes of weights needs at least
// B / bandwidth seconds.
//
//   cc -O3 -march=native -pthread read_bandwidth.c -o read_bandwidth
//   read_bandwidth [THREADS=2] [PASSES=5]
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { kBytes = 1 << 30 };

struct slice {
  const uint64_t* begin;
  size_t words;
  uint64_t sum;
};

static void* sum_slice(void* arg) {
  struct slice* s = arg;
  uint64_t sum = 0;  // an integer sum: -O3 vectorizes it, so the loads are the limit
  for (size_t i = 0; i < s->words; ++i) sum += s->begin[i];
  s->sum = sum;
  return NULL;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char** argv) {
  const int threads = argc > 1 ? atoi(argv[1]) : 2;
  const int passes = argc > 2 ? atoi(argv[2]) : 5;
  if (threads < 1 || threads > 256 || passes < 1) {
    fprintf(stderr, "usage: %s [THREADS (1..256)] [PASSES (>= 1)]\n", argv[0]);
    return 2;
  }
  uint64_t* buffer = malloc(kBytes);
  if (buffer == NULL) return 1;
  memset(buffer, 1, kBytes);  // touch every page before timing
  const size_t words = kBytes / sizeof(uint64_t);
  struct slice slices[256];
  pthread_t ids[256];
  double best = 0;
  uint64_t checksum = 0;
  for (int pass = 0; pass < passes; ++pass) {
    const double start = now();
    for (int t = 0; t < threads; ++t) {
      slices[t].begin = buffer + words * t / threads;
      slices[t].words = words * (t + 1) / threads - words * t / threads;
      pthread_create(&ids[t], NULL, sum_slice, &slices[t]);
    }
    for (int t = 0; t < threads; ++t) {
      pthread_join(ids[t], NULL);
      checksum += slices[t].sum;
    }
    const double gbps = kBytes / (now() - start) / 1e9;
    if (gbps > best) best = gbps;
  }
  printf("%.2f\n", best);
  fprintf(stderr, "read_bandwidth: %d threads, best of %d passes over 1 GiB (checksum %llu)\n",
          threads, passes, (unsigned long long)checksum);
  free(buffer);
  return 0;
}
