// Small helpers for the kernel families. Included inside each ISA's translation unit; everything
// here is static inline so that no ISA's code is shared with another through the linker.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>

#include "fastconv/activation.h"

// Bytes of one vector register of the instruction set this translation unit is compiled for:
// the vector-extension kernels size their vectors and tiles from it.
#if defined(__AVX512F__)
#define FC_VEC_BYTES 64
#elif defined(__AVX2__)
#define FC_VEC_BYTES 32
#else
#define FC_VEC_BYTES 16
#endif

namespace fastconv::cpu {

// Below this many multiply-adds (or window elements, for pooling) a call runs on one thread.
// Opening and joining a 2-thread OpenMP region measured 5-10 us on the 2-core Zen 4 VM (a
// 36 K-MAC depthwise call: 7.5 us on one thread, 12 us on two); a region is worth opening only for
// about ten times that, ~60 us of one thread's work, about 0.5 M depthwise multiply-adds.
constexpr int64_t kParallelMinWork = 1 << 19;

// The first line of cpu0's cache file `name` of cache `index` as Linux describes it, into text.
static inline bool read_cpu0_cache_file(int index, const char* name, char* text, int size) {
  char path[80];
  std::snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/%s", index, name);
  std::FILE* f = std::fopen(path, "r");
  if (!f) return false;
  const bool read = std::fgets(text, size, f) != nullptr;
  std::fclose(f);
  return read;
}

// The size of cpu0's level-1 data, level-2 or level-3 cache as Linux describes it, or -1.
static inline long sysfs_cache_bytes(int level) {
  char text[32];
  for (int index = 0; read_cpu0_cache_file(index, "level", text, sizeof text); ++index) {
    if (std::atoi(text) != level) continue;
    if (!read_cpu0_cache_file(index, "type", text, sizeof text) || text[0] == 'I') continue;  // "Instruction"
    if (!read_cpu0_cache_file(index, "size", text, sizeof text)) return -1;
    char* unit = nullptr;
    const long size = std::strtol(text, &unit, 10);
    if (size <= 0) return -1;
    return *unit == 'K' ? size << 10 : *unit == 'M' ? size << 20 : size;
  }
  return -1;
}

// The size of this CPU's level-1 data, level-2 or level-3 cache as Linux describes it, else as the C
// library reports it (glibc: from CPUID), or -1. Linux first: on an AMD EPYC (Zen 3) guest glibc
// reported the 256 MiB of the whole package where Linux gave the 32 MiB L3 that the core shares
// (8 x 112 x 112 x 144 depthwise, 72 MB moved, then ran direct instead of staged: 1.3-1.5x slower).
static inline long reported_cache_bytes(int level) {
  if (const long bytes = sysfs_cache_bytes(level); bytes > 0) return bytes;
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE) && defined(_SC_LEVEL3_CACHE_SIZE)
  return sysconf(level == 1 ? _SC_LEVEL1_DCACHE_SIZE : level == 2 ? _SC_LEVEL2_CACHE_SIZE : _SC_LEVEL3_CACHE_SIZE);
#else
  return -1;
#endif
}

// A cache size from the environment variable `forced` when set (a virtual machine may report its
// host's whole cache; the tests pin the sizes so that their shapes reach the same paths everywhere),
// else the reported size (reported_cache_bytes) up to reported_max, else `fallback`.
static inline int64_t cache_bytes(const char* forced, int level, int64_t fallback, int64_t reported_max) {
  long long reported = reported_cache_bytes(level);
  if (reported > reported_max) reported = reported_max;
  if (const char* value = std::getenv(forced); value && *value) reported = std::atoll(value);
  return reported > 0 ? int64_t{reported} : fallback;
}

// The last-level cache that size-dependent paths plan for, read once per process:
// FASTCONV_CACHE_BYTES, else the L3 up to kPlannedCacheMaxBytes, else 32 MiB. The cap: a virtual
// machine may report its host's whole L3 (a 2-vCPU Xeon guest: 300 MiB) where one core's reads
// fall from L3 to DRAM speed between 32 and 48 MB. (Planned for 300 MiB, depthwise layers of 38-58
// MB stayed direct, then 1.2-1.35x slower than staged; since the direct blocks prefetch their
// stores, they are the faster path there and staging starts at twice this size: bench/NOTES.md.)
constexpr int64_t kPlannedCacheMaxBytes = int64_t{64} << 20;
static inline int64_t last_level_cache_bytes() {
  static const int64_t bytes = cache_bytes("FASTCONV_CACHE_BYTES", 3, int64_t{32} << 20, kPlannedCacheMaxBytes);
  return bytes;
}

// A core's L1 data cache (the depthwise column blocks): FASTCONV_L1_BYTES, else the reported size,
// else 32 KiB (Zen 4's).
static inline int64_t l1_cache_bytes() {
  static const int64_t bytes = cache_bytes("FASTCONV_L1_BYTES", 1, int64_t{32} << 10, INT64_MAX);
  return bytes;
}

// A core's L2 (the depthwise kernels' channel slabs): FASTCONV_L2_BYTES, else the reported size,
// else 1 MiB (Zen 4's).
static inline int64_t l2_cache_bytes() {
  static const int64_t bytes = cache_bytes("FASTCONV_L2_BYTES", 2, int64_t{1} << 20, INT64_MAX);
  return bytes;
}

// Weights packed per call, up to this many floats, get one copy per thread, each packed by its own
// thread inside the parallel region (no barrier); larger ones one copy, packed by the team. A
// single copy read by every thread sits in the other threads' caches at the next call, whose pack
// then waits for each line to come back (bench/NOTES.md, "Packed weights: a copy per thread while
// they are small": small layers 0.74-0.97 of the time).
constexpr int64_t kOwnPackMaxFloats = int64_t{1} << 16;
// The distance between those copies: whole 64-byte lines, so that no two threads write one line.
static inline int64_t own_copy_stride(int64_t floats) { return (floats + 15) / 16 * 16; }

static inline int threads_for(int64_t work, int threads, int64_t min_work = kParallelMinWork) {
  return work < min_work ? 1 : threads;
}

// Runs body() on a team of `nthreads` OpenMP threads; a team of one runs it directly on the calling
// thread, as an orphaned region (`omp for`, barriers and omp_get_thread_num() then act on a team of
// one). libgomp's region costs ~0.4 us even for one thread: a third of a tiny dense layer's kernel.
template <class Body>
static inline void parallel_run(int nthreads, Body&& body) {
  if (nthreads <= 1) {
    body();
    return;
  }
#pragma omp parallel num_threads(nthreads)
  body();
}

// Scratch of `count` floats on a 64-byte boundary, rounded up to whole cache lines; released with
// std::free. Out of memory is std::bad_alloc (MemoryError in Python), never a null pointer. Called
// outside parallel regions: an exception must not leave an OpenMP thread.
static inline float* alloc_floats(int64_t count) {
  const size_t bytes = ((static_cast<size_t>(count > 0 ? count : 1) * sizeof(float) + 63) / 64) * 64;
  void* p = std::aligned_alloc(64, bytes);
  if (p == nullptr) throw std::bad_alloc();
  return static_cast<float*>(p);
}

// A buffer the calling thread keeps between calls for one purpose (a kernel's packed weights, its
// panels), grown to the largest call's need and freed when the thread exits. Freshly allocated per
// call, a buffer past glibc's mmap threshold is mapped and faulted in each time (a 512 x 512
// Winograd layer's 38 MB of transformed weights: 46 ms of page faults against 5 ms of work), and
// freeing smaller ones can trim the heap top and fault it in again the next call. Calls needing more
// than kWorkspaceKeepFloats allocate and free their own (acquire_workspace's `owned`).
constexpr int64_t kWorkspaceKeepFloats = int64_t{64} << 20;  // 256 MiB
struct Workspace {
  float* data = nullptr;
  int64_t capacity = 0;
  Workspace() = default;
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  ~Workspace() { std::free(data); }
};
// `count` floats of ws (or, when *owned comes back true, of a new allocation the caller frees). Out
// of memory throws std::bad_alloc: call outside parallel regions. The contents are undefined.
static inline float* acquire_workspace(Workspace& ws, int64_t count, bool* owned) {
  *owned = count > kWorkspaceKeepFloats;
  if (*owned) return alloc_floats(count);
  if (ws.capacity < count) {
    std::free(ws.data);
    ws.data = nullptr;  // if the allocation below throws, no freed buffer is handed out next call
    ws.capacity = 0;
    ws.data = alloc_floats(count);
    ws.capacity = count;
  }
  return ws.data;
}
// A call's floats from a Workspace (acquire_workspace), an own allocation past
// kWorkspaceKeepFloats freed when the lease ends. A count of 0 takes nothing (an empty workspace
// hands out null).
class WorkspaceLease {
 public:
  WorkspaceLease(Workspace& ws, int64_t count) : data_(acquire_workspace(ws, count, &owned_)) {}
  ~WorkspaceLease() {
    if (owned_) std::free(data_);
  }
  WorkspaceLease(const WorkspaceLease&) = delete;
  WorkspaceLease& operator=(const WorkspaceLease&) = delete;
  float* get() const { return data_; }

 private:
  bool owned_ = false;  // declared first: data_'s initializer sets it
  float* data_;
};

// Plain loops and local min/max rather than <algorithm>: a template instantiated in one ISA's
// translation unit may be the copy the linker keeps for all of them.
static inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max_i64(int64_t a, int64_t b) { return a > b ? a : b; }
static constexpr int64_t gcd_i64(int64_t a, int64_t b) { return b == 0 ? a : gcd_i64(b, a % b); }
static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// `total` in ceil(total / most) parts of equal size, give or take one: 9 by 8 as 5 + 4, not 8 + 1,
// whose part of 1 has too few accumulator chains to cover the FMA latency.
struct EvenParts {
  int64_t count, base, larger;  // the first `larger` parts have base + 1
  int64_t size(int64_t i) const { return base + (i < larger ? 1 : 0); }
  int64_t start(int64_t i) const { return i * base + min_i64(i, larger); }
};
static inline EvenParts even_parts(int64_t total, int64_t most) {
  const int64_t count = (total + most - 1) / most;
  return {count, total / count, total % count};
}

}  // namespace fastconv::cpu
