// Layout changes between channels-first [N, C, H*W] and channels-last [N, H*W, C], with the
// dtype conversion to and from the accumulation type in the same pass. A tiled transpose:
// the generic strided copy is up to twice as slow for large images.
#include <torch/csrc/stable/ops.h>

#include <algorithm>

#include "../tensor_ops.h"
#include "../vectorize.h"
#include "kernels.h"

namespace deformconv {

namespace {

// A 32 x 32 tile of float32 is 32 cache lines read and 32 written.
constexpr int64_t kTile = 32;

// Elements per task of a plain copy: enough to amortise the scheduling.
constexpr int64_t kCopyGrain = 32768;

struct Tiles {
  int64_t rows, cols, row_tiles, col_tiles;
};

template <typename S, typename D>
DEFORMCONV_VECTORIZE void transpose_tiles(const S* __restrict__ src, D* __restrict__ dst, const Tiles& t,
                                          int64_t begin, int64_t end) {
  const int64_t per_image = t.row_tiles * t.col_tiles;
  for (int64_t tile = begin; tile < end; ++tile) {
    const int64_t n = tile / per_image, r0 = (tile % per_image) / t.col_tiles * kTile;
    const int64_t c0 = (tile % t.col_tiles) * kTile;
    const int64_t r1 = std::min(t.rows, r0 + kTile), c1 = std::min(t.cols, c0 + kTile);
    const S* in = src + n * t.rows * t.cols;
    D* out = dst + n * t.rows * t.cols;
    for (int64_t c = c0; c < c1; ++c) {
      for (int64_t r = r0; r < r1; ++r) {
        out[c * t.rows + r] = static_cast<D>(in[r * t.cols + c]);
      }
    }
  }
}

template <typename S, typename D>
DEFORMCONV_VECTORIZE void copy_row_range(const S* __restrict__ src, int64_t src_stride, const S* bias,
                                         int64_t length, D* __restrict__ dst, int64_t dst_stride, int64_t begin,
                                         int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    const S* __restrict__ in = src + r * src_stride;
    D* __restrict__ out = dst + r * dst_stride;
    if (bias == nullptr) {
      for (int64_t i = 0; i < length; ++i) {
        out[i] = static_cast<D>(in[i]);
      }
    } else {
      const S b = bias[r];
      for (int64_t i = 0; i < length; ++i) {
        out[i] = static_cast<D>(in[i] + b);
      }
    }
  }
}

}  // namespace

template <typename S, typename D>
void transpose_images(const S* src, int64_t images, int64_t rows, int64_t cols, D* dst) {
  const Tiles tiles{rows, cols, (rows + kTile - 1) / kTile, (cols + kTile - 1) / kTile};
  torch::stable::parallel_for(0, images * tiles.row_tiles * tiles.col_tiles, 16,
                              [&](int64_t begin, int64_t end) { transpose_tiles(src, dst, tiles, begin, end); });
}

template <typename S, typename D>
void copy_rows(const S* src, int64_t src_stride, const S* bias, int64_t rows, int64_t length, D* dst,
               int64_t dst_stride) {
  const int64_t grain = std::max<int64_t>(1, kCopyGrain / std::max<int64_t>(length, 1));
  torch::stable::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    copy_row_range(src, src_stride, bias, length, dst, dst_stride, begin, end);
  });
}

// Every pair of floating types: the layout helpers convert between any dtype and the
// accumulation type in both directions.
#define DEFORMCONV_LAYOUT_PAIR(S, D)                                                         \
  template void transpose_images<S, D>(const S*, int64_t, int64_t, int64_t, D*);             \
  template void copy_rows<S, D>(const S*, int64_t, const S*, int64_t, int64_t, D*, int64_t);
#define DEFORMCONV_LAYOUT_FROM(S)     \
  DEFORMCONV_LAYOUT_PAIR(S, double)   \
  DEFORMCONV_LAYOUT_PAIR(S, float)    \
  DEFORMCONV_LAYOUT_PAIR(S, Half)     \
  DEFORMCONV_LAYOUT_PAIR(S, BFloat16)
DEFORMCONV_LAYOUT_FROM(double)
DEFORMCONV_LAYOUT_FROM(float)
DEFORMCONV_LAYOUT_FROM(Half)
DEFORMCONV_LAYOUT_FROM(BFloat16)
#undef DEFORMCONV_LAYOUT_FROM
#undef DEFORMCONV_LAYOUT_PAIR

}  // namespace deformconv
