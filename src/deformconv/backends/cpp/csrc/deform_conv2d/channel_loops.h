// Loops over the channels of one sample point: the work that the bilinear weights, computed
// once per sample point, are reused for. The input is channels-last, so the channels of a
// corner are contiguous; columns are read and written through gather/put helpers that make
// them contiguous too.
#pragma once

#include <cstdint>

#include "geometry.h"
#include "sampling.h"
#include "../vectorize.h"

namespace deformconv {

// Independent partial sums per dot product: one cache line, so the compiler vectorises the
// loop at any vector width; they are added up in a fixed order, so results never depend on
// the instruction set's vector width or on threads.
template <typename T>
constexpr int kLanes = 64 / sizeof(T);

// dots[j] += the lanes of corner j's partial sums, added in lane order.
template <typename T>
DEFORMCONV_INLINE void add_lanes(const T (&lanes)[4][kLanes<T>], T (&dots)[4]) {
  for (int j = 0; j < 4; ++j) {
    T sum = T(0);
    for (int l = 0; l < kLanes<T>; ++l) {
      sum += lanes[j][l];
    }
    dots[j] += sum;
  }
}

// dst[i] = sum over the valid corners j of weight[j] * corner_j[i], i in [0, length);
// `image` points at the first channel of the range in pixel 0 of a [H*W, channels] image.
template <typename T>
DEFORMCONV_INLINE void blend(T* __restrict__ dst, const T* image, int64_t channels, const SamplePoint<T>& s,
                             const T (&weight)[4], int64_t length) {
  if (s.valid == SamplePoint<T>::kAllValid) {
    const T* __restrict__ a = image + s.index[0] * channels;
    const T* __restrict__ b = image + s.index[1] * channels;
    const T* __restrict__ c = image + s.index[2] * channels;
    const T* __restrict__ d = image + s.index[3] * channels;
    const T wa = weight[0], wb = weight[1], wc = weight[2], wd = weight[3];
    for (int64_t i = 0; i < length; ++i) {
      dst[i] = wa * a[i] + wb * b[i] + wc * c[i] + wd * d[i];
    }
    return;
  }
  for (int64_t i = 0; i < length; ++i) {
    dst[i] = T(0);
  }
  for (int j = 0; j < 4; ++j) {
    if (s.valid & (1 << j)) {
      const T* __restrict__ corner = image + s.index[j] * channels;
      const T w = weight[j];
      for (int64_t i = 0; i < length; ++i) {
        dst[i] += w * corner[i];
      }
    }
  }
}

// dots[j] += sum over i in [0, length) of grad[i] * corner_j[i], for every valid corner j.
template <typename T>
DEFORMCONV_INLINE void corner_dots(const T* __restrict__ grad, const T* image, int64_t channels,
                                   const SamplePoint<T>& s, int64_t length, T (&dots)[4]) {
  constexpr int L = kLanes<T>;
  T lanes[4][L] = {};
  const int64_t body = length - length % L;
  if (s.valid == SamplePoint<T>::kAllValid) {
    const T* __restrict__ a = image + s.index[0] * channels;
    const T* __restrict__ b = image + s.index[1] * channels;
    const T* __restrict__ c = image + s.index[2] * channels;
    const T* __restrict__ d = image + s.index[3] * channels;
    for (int64_t i = 0; i < body; i += L) {
      for (int l = 0; l < L; ++l) {
        const T gv = grad[i + l];
        lanes[0][l] += gv * a[i + l];
        lanes[1][l] += gv * b[i + l];
        lanes[2][l] += gv * c[i + l];
        lanes[3][l] += gv * d[i + l];
      }
    }
    for (int64_t i = body; i < length; ++i) {
      lanes[0][i - body] += grad[i] * a[i];
      lanes[1][i - body] += grad[i] * b[i];
      lanes[2][i - body] += grad[i] * c[i];
      lanes[3][i - body] += grad[i] * d[i];
    }
  } else {
    for (int j = 0; j < 4; ++j) {
      if (!(s.valid & (1 << j))) {
        continue;
      }
      const T* __restrict__ corner = image + s.index[j] * channels;
      for (int64_t i = 0; i < body; i += L) {
        for (int l = 0; l < L; ++l) {
          lanes[j][l] += grad[i + l] * corner[i + l];
        }
      }
      for (int64_t i = body; i < length; ++i) {
        lanes[j][i - body] += grad[i] * corner[i];
      }
    }
  }
  add_lanes(lanes, dots);
}

// corner_j[i] += weight[j] * grad[i] for every valid corner j, i in [0, length).
template <typename T>
DEFORMCONV_INLINE void scatter(T* image, int64_t channels, const SamplePoint<T>& s, const T (&weight)[4],
                               const T* __restrict__ grad, int64_t length) {
  for (int j = 0; j < 4; ++j) {
    if (!(s.valid & (1 << j))) {
      continue;
    }
    T* __restrict__ corner = image + s.index[j] * channels;
    const T w = weight[j];
    for (int64_t i = 0; i < length; ++i) {
      corner[i] += w * grad[i];
    }
  }
}

// The corners of one sample point (four distinct pixels) in the image and in its gradient,
// and their bilinear weights times the mask.
template <typename T>
struct InsideCorners {
  const T* __restrict__ value[4];
  T* __restrict__ grad[4];
  T weight[4];
};

// Channel i of depthwise_point_inside; its dot products with the four corners are added to
// lane0..lane3.
template <typename T>
DEFORMCONV_INLINE void inside_step(const InsideCorners<T>& k, const T* __restrict__ grad_output,
                                   const T* __restrict__ point_weight, T* __restrict__ weight_grad, int64_t i,
                                   T* __restrict__ lane0, T* __restrict__ lane1, T* __restrict__ lane2,
                                   T* __restrict__ lane3) {
  const T* __restrict__ a = k.value[0];
  const T* __restrict__ b = k.value[1];
  const T* __restrict__ c = k.value[2];
  const T* __restrict__ d = k.value[3];
  T* __restrict__ ga = k.grad[0];
  T* __restrict__ gb = k.grad[1];
  T* __restrict__ gc = k.grad[2];
  T* __restrict__ gd = k.grad[3];
  const T go = grad_output[i], gv = go * point_weight[i];
  const T av = a[i], bv = b[i], cv = c[i], dv = d[i];
  const T sampled = k.weight[0] * av + k.weight[1] * bv + k.weight[2] * cv + k.weight[3] * dv;
  weight_grad[i] += go * sampled;
  *lane0 += gv * av;
  *lane1 += gv * bv;
  *lane2 += gv * cv;
  *lane3 += gv * dv;
  ga[i] += k.weight[0] * gv;
  gb[i] += k.weight[1] * gv;
  gc[i] += k.weight[2] * gv;
  gd[i] += k.weight[3] * gv;
}

// The whole depthwise backward of one sample point whose four corners lie inside the image, in
// one pass over `length` channels that reads each corner once: with grad = grad_output *
// point_weight, weight_grad[i] += grad_output[i] * sample[i], dots[j] += sum of grad[i] *
// corner_j[i] and grad_corner_j[i] += weight[j] * grad[i]. The same arithmetic, lane for lane,
// as backward_item's separate loops (blend, corner_dots and scatter: see sample_back).
template <typename T>
DEFORMCONV_INLINE void depthwise_point_inside(const T* image, T* grad_image, int64_t channels, const SamplePoint<T>& s,
                                              const T (&weight)[4], const T* __restrict__ grad_output,
                                              const T* __restrict__ point_weight, T* __restrict__ weight_grad,
                                              int64_t length, T (&dots)[4]) {
  constexpr int L = kLanes<T>;
  T lanes[4][L] = {};
  InsideCorners<T> k;
  for (int j = 0; j < 4; ++j) {
    k.value[j] = image + s.index[j] * channels;
    k.grad[j] = grad_image + s.index[j] * channels;
    k.weight[j] = weight[j];
  }
  const int64_t body = length - length % L;
  for (int64_t i = 0; i < body; i += L) {
    // The corners are distinct pixels and every output its own buffer: no iteration reads what
    // another writes, which the compiler cannot prove on its own (it would not vectorise).
#pragma omp simd
    for (int l = 0; l < L; ++l) {
      inside_step(k, grad_output, point_weight, weight_grad, i + l, &lanes[0][l], &lanes[1][l], &lanes[2][l],
                  &lanes[3][l]);
    }
  }
  for (int64_t i = body; i < length; ++i) {
    const int64_t l = i - body;
    inside_step(k, grad_output, point_weight, weight_grad, i, &lanes[0][l], &lanes[1][l], &lanes[2][l],
                &lanes[3][l]);
  }
  add_lanes(lanes, dots);
}

// The backward of one sample point over a range of channels, each part when its flag is set:
//   kSample:  sampled[i] = sum over the valid corners j of weight[j] * corner_j[i]   (blend)
//   kDots:    dots[j] += sum over i of grad[i] * corner_j[i]                       (corner_dots)
//   kScatter: grad_corner_j[i] += weight[j] * grad[i]   (scatter; grad_image: [H*W, channels])
// Three loops, each of which the compiler vectorises, one after the other while the point's
// corners are in the L1 cache: a single fused loop does not vectorise.
template <typename T, bool kSample, bool kDots, bool kScatter>
DEFORMCONV_INLINE void sample_back(const T* image, T* grad_image, int64_t channels, const SamplePoint<T>& s,
                                   const T (&weight)[4], const T* grad, int64_t length, T* sampled,
                                   T (&dots)[4]) {
  if constexpr (kSample) {
    blend(sampled, image, channels, s, weight, length);
  }
  if constexpr (kDots) {
    corner_dots(grad, image, channels, s, length, dots);
  }
  if constexpr (kScatter) {
    scatter(grad_image, channels, s, weight, grad, length);
  }
}

// The column entries of one channel range in one row, for every kernel point: point k's
// channels are contiguous at data + k * stride.
template <typename T>
struct RangeColumns {
  T* data;
  int64_t stride;
};

// The column entries of `range` in a row, for the K kernel points: in place when one run holds
// the range contiguously, otherwise gathered into `buffer` ([K][range.length]). The copy goes
// run by run, since a run's entries for all K points are together in the column buffer.
template <typename T>
DEFORMCONV_INLINE RangeColumns<const T> gather_columns(const T* row_columns, const ChannelRange& range,
                                                       int64_t points, T* buffer) {
  if (range.contiguous()) {
    return {row_columns + range.runs[0].column, range.runs[0].point_step};
  }
  for (const ChannelRun& run : range.runs) {
    for (int64_t k = 0; k < points; ++k) {
      const T* source = row_columns + run.column + k * run.point_step;
      T* target = buffer + k * range.length + (run.channel - range.channel);
      for (int64_t i = 0; i < run.length; ++i) {
        target[i] = source[i * run.channel_step];
      }
    }
  }
  return {buffer, range.length};
}

// Where to write the column entries of `range` in a row: in place when one run holds the range
// contiguously, otherwise `buffer` ([K][range.length]), which put_columns then copies into place.
template <typename T>
DEFORMCONV_INLINE RangeColumns<T> column_target(T* row_columns, const ChannelRange& range, T* buffer) {
  if (range.contiguous()) {
    return {row_columns + range.runs[0].column, range.runs[0].point_step};
  }
  return {buffer, range.length};
}

template <typename T>
DEFORMCONV_INLINE void put_columns(const T* buffer, const ChannelRange& range, int64_t points,
                                   T* row_columns) {
  if (range.contiguous()) {
    return;
  }
  for (const ChannelRun& run : range.runs) {
    for (int64_t k = 0; k < points; ++k) {
      const T* source = buffer + k * range.length + (run.channel - range.channel);
      T* target = row_columns + run.column + k * run.point_step;
      for (int64_t i = 0; i < run.length; ++i) {
        target[i * run.channel_step] = source[i];
      }
    }
  }
}

}  // namespace deformconv
