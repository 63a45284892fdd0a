#include "micro_kernel.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define DEFORMCONV_X86 1
#endif

namespace deformconv {

namespace {

#ifdef DEFORMCONV_X86

// 12 rows x 32 channels: 24 accumulators, 2 vectors of A and 1 broadcast of the 32 registers.
constexpr int kRows512 = 12;

// acc[i] += sum over p < length of b[i * ldb + p] * a[p]; a advances past the entries it read.
__attribute__((target("avx512f"), always_inline)) inline void dot_avx512(const float*& a, const float* b,
                                                                          int64_t ldb, int64_t length,
                                                                          __m512 (&acc)[kRows512][2]) {
  for (int64_t p = 0; p < length; ++p, a += 32) {
    const __m512 a0 = _mm512_loadu_ps(a), a1 = _mm512_loadu_ps(a + 16);
    for (int i = 0; i < kRows512; ++i) {
      const __m512 bi = _mm512_set1_ps(b[i * ldb + p]);
      acc[i][0] = _mm512_fmadd_ps(a0, bi, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(a1, bi, acc[i][1]);
    }
  }
}

__attribute__((target("avx512f"))) void kernel_avx512(const float* a, const float* b, int64_t ldb,
                                                        const Depth& depth, float* c, int64_t ldc, bool accumulate) {
  __m512 acc[kRows512][2];
  for (int i = 0; i < kRows512; ++i) {
    acc[i][0] = _mm512_setzero_ps();
    acc[i][1] = _mm512_setzero_ps();
  }
  // One run on its own: its loop keeps every row pointer in a register.
  if (depth.segments == 1) {
    dot_avx512(a, b, ldb, depth.length, acc);
  } else {
    for (int64_t s = 0; s < depth.segments; ++s) {
      dot_avx512(a, b + s * depth.stride, ldb, depth.length, acc);
    }
  }
  for (int i = 0; i < kRows512; ++i) {
    float* row = c + i * ldc;
    if (accumulate) {
      acc[i][0] = _mm512_add_ps(_mm512_loadu_ps(row), acc[i][0]);
      acc[i][1] = _mm512_add_ps(_mm512_loadu_ps(row + 16), acc[i][1]);
    }
    _mm512_storeu_ps(row, acc[i][0]);
    _mm512_storeu_ps(row + 16, acc[i][1]);
  }
}

// 6 rows x 16 channels: 12 accumulators, 2 vectors of A and 1 broadcast of the 16 registers.
constexpr int kRows256 = 6;

// acc[i] += sum over p < length of b[i * ldb + p] * a[p]; a advances past the entries it read.
__attribute__((target("avx2,fma"), always_inline)) inline void dot_avx2(const float*& a, const float* b,
                                                                         int64_t ldb, int64_t length,
                                                                         __m256 (&acc)[kRows256][2]) {
  for (int64_t p = 0; p < length; ++p, a += 16) {
    const __m256 a0 = _mm256_loadu_ps(a), a1 = _mm256_loadu_ps(a + 8);
    for (int i = 0; i < kRows256; ++i) {
      const __m256 bi = _mm256_broadcast_ss(b + i * ldb + p);
      acc[i][0] = _mm256_fmadd_ps(a0, bi, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(a1, bi, acc[i][1]);
    }
  }
}

__attribute__((target("avx2,fma"))) void kernel_avx2(const float* a, const float* b, int64_t ldb,
                                                       const Depth& depth, float* c, int64_t ldc, bool accumulate) {
  __m256 acc[kRows256][2];
  for (int i = 0; i < kRows256; ++i) {
    acc[i][0] = _mm256_setzero_ps();
    acc[i][1] = _mm256_setzero_ps();
  }
  if (depth.segments == 1) {
    dot_avx2(a, b, ldb, depth.length, acc);
  } else {
    for (int64_t s = 0; s < depth.segments; ++s) {
      dot_avx2(a, b + s * depth.stride, ldb, depth.length, acc);
    }
  }
  for (int i = 0; i < kRows256; ++i) {
    float* row = c + i * ldc;
    if (accumulate) {
      acc[i][0] = _mm256_add_ps(_mm256_loadu_ps(row), acc[i][0]);
      acc[i][1] = _mm256_add_ps(_mm256_loadu_ps(row + 8), acc[i][1]);
    }
    _mm256_storeu_ps(row, acc[i][0]);
    _mm256_storeu_ps(row + 8, acc[i][1]);
  }
}

MicroKernel choose() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) {
    return {kernel_avx512, 32, kRows512, 256, "avx512"};
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return {kernel_avx2, 16, kRows256, 256, "avx2"};
  }
  return {nullptr, 0, 0, 0, "none"};
}

#else

MicroKernel choose() { return {nullptr, 0, 0, 0, "none"}; }

#endif

}  // namespace

const MicroKernel& micro_kernel() {
  static const MicroKernel kernel = choose();
  return kernel;
}

}  // namespace deformconv
