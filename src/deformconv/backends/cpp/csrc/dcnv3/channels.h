// The loops over the channels of one group, the hot spots of the DCNv3 / DCNv4 kernels. The
// float32 versions are compiled for AVX2 as well as for the baseline ISA, and the dynamic
// loader picks the one the CPU supports (GCC function multi-versioning); other types use the
// generic templates. Every version sums in the same order, without FMA contraction.
#pragma once

#include <cstdint>

namespace deformconv::dcn {

// acc[d] += w[0]*s[0][d] + w[1]*s[1][d] + w[2]*s[2][d] + w[3]*s[3][d]
void blend4(float* acc, const float* const* s, const float* w, int64_t n);
// dot[k] = sum over d of go[d] * s[k][d], k < 4
void dots4(const float* go, const float* const* s, int64_t n, float* dot);
// dst[k][d] += w[k] * go[d], k < 4 (the backward's scatter of one sample point)
void scatter4(float* const* dst, const float* w, const float* go, int64_t n);
// scatter4 and dots4 in one pass over the channels
void scatter4_dots4(float* const* dst, const float* w, const float* go, const float* const* s, int64_t n, float* dot);

template <typename scalar_t, typename acc_t>
inline void blend4(acc_t* acc, const scalar_t* const* s, const acc_t* w, int64_t n) {
  for (int64_t d = 0; d < n; ++d) {
    acc[d] += w[0] * acc_t(s[0][d]) + w[1] * acc_t(s[1][d]) + w[2] * acc_t(s[2][d]) + w[3] * acc_t(s[3][d]);
  }
}

template <typename scalar_t, typename acc_t>
inline void dots4(const scalar_t* go, const scalar_t* const* s, int64_t n, acc_t* dot) {
  acc_t d0 = 0, d1 = 0, d2 = 0, d3 = 0;
  for (int64_t d = 0; d < n; ++d) {
    const acc_t g = acc_t(go[d]);
    d0 += g * acc_t(s[0][d]);
    d1 += g * acc_t(s[1][d]);
    d2 += g * acc_t(s[2][d]);
    d3 += g * acc_t(s[3][d]);
  }
  dot[0] = d0, dot[1] = d1, dot[2] = d2, dot[3] = d3;
}

template <typename scalar_t, typename acc_t>
inline void scatter4(acc_t* const* dst, const acc_t* w, const scalar_t* go, int64_t n) {
  for (int64_t d = 0; d < n; ++d) {
    const acc_t g = acc_t(go[d]);
    dst[0][d] += w[0] * g;
    dst[1][d] += w[1] * g;
    dst[2][d] += w[2] * g;
    dst[3][d] += w[3] * g;
  }
}

template <typename scalar_t, typename acc_t>
inline void scatter4_dots4(acc_t* const* dst, const acc_t* w, const scalar_t* go, const scalar_t* const* s, int64_t n,
                           acc_t* dot) {
  scatter4(dst, w, go, n);
  dots4(go, s, n, dot);
}

}  // namespace deformconv::dcn
