// float32 channel loops, multi-versioned for AVX2 (see channels.h).
#include "channels.h"

#define DEFORMCONV_CLONES __attribute__((target_clones("avx2", "default")))

namespace deformconv::dcn {

DEFORMCONV_CLONES void blend4(float* acc, const float* const* s, const float* w, int64_t n) {
  const float *s0 = s[0], *s1 = s[1], *s2 = s[2], *s3 = s[3];
  const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
#pragma omp simd
  for (int64_t d = 0; d < n; ++d) acc[d] += w0 * s0[d] + w1 * s1[d] + w2 * s2[d] + w3 * s3[d];
}

DEFORMCONV_CLONES void dots4(const float* go, const float* const* s, int64_t n, float* dot) {
  const float *s0 = s[0], *s1 = s[1], *s2 = s[2], *s3 = s[3];
  float d0 = 0, d1 = 0, d2 = 0, d3 = 0;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
  for (int64_t d = 0; d < n; ++d) {
    d0 += go[d] * s0[d];
    d1 += go[d] * s1[d];
    d2 += go[d] * s2[d];
    d3 += go[d] * s3[d];
  }
  dot[0] = d0, dot[1] = d1, dot[2] = d2, dot[3] = d3;
}

DEFORMCONV_CLONES void scatter4(float* const* dst, const float* w, const float* go, int64_t n) {
  float *t0 = dst[0], *t1 = dst[1], *t2 = dst[2], *t3 = dst[3];
  const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
  // Only rows of corners outside the image (a scratch row, never read) may coincide.
#pragma omp simd
  for (int64_t d = 0; d < n; ++d) {
    const float g = go[d];
    t0[d] += w0 * g;
    t1[d] += w1 * g;
    t2[d] += w2 * g;
    t3[d] += w3 * g;
  }
}

DEFORMCONV_CLONES void scatter4_dots4(float* const* dst, const float* w, const float* go, const float* const* s,
                                      int64_t n, float* dot) {
  float *t0 = dst[0], *t1 = dst[1], *t2 = dst[2], *t3 = dst[3];
  const float *s0 = s[0], *s1 = s[1], *s2 = s[2], *s3 = s[3];
  const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
  float d0 = 0, d1 = 0, d2 = 0, d3 = 0;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
  for (int64_t d = 0; d < n; ++d) {
    const float g = go[d];
    d0 += g * s0[d];
    d1 += g * s1[d];
    d2 += g * s2[d];
    d3 += g * s3[d];
    t0[d] += w0 * g;
    t1[d] += w1 * g;
    t2[d] += w2 * g;
    t3[d] += w3 * g;
  }
  dot[0] = d0, dot[1] = d1, dot[2] = d2, dot[3] = d3;
}

}  // namespace deformconv::dcn
