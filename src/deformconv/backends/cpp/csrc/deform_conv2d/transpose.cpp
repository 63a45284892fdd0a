// Layout changes between channels-first [N, C, H*W] and channels-last [N, H*W, C], with the
// dtype conversion to and from the accumulation type in the same pass. A tiled transpose:
// the generic strided copy is up to twice as slow for large images.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>

#include "kernels.h"
#include "../vectorize.h"

namespace deformconv {

namespace {

// A 32 x 32 tile of float32 is 32 cache lines read and 32 written.
constexpr int64_t kTile = 32;

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

}  // namespace

template <typename S, typename D>
void transpose_images(const S* src, int64_t images, int64_t rows, int64_t cols, D* dst) {
  const Tiles tiles{rows, cols, (rows + kTile - 1) / kTile, (cols + kTile - 1) / kTile};
  at::parallel_for(0, images * tiles.row_tiles * tiles.col_tiles, 16,
                   [&](int64_t begin, int64_t end) { transpose_tiles(src, dst, tiles, begin, end); });
}

template void transpose_images<float, float>(const float*, int64_t, int64_t, int64_t, float*);
template void transpose_images<double, double>(const double*, int64_t, int64_t, int64_t, double*);
template void transpose_images<c10::Half, float>(const c10::Half*, int64_t, int64_t, int64_t, float*);
template void transpose_images<c10::BFloat16, float>(const c10::BFloat16*, int64_t, int64_t, int64_t, float*);
template void transpose_images<float, c10::Half>(const float*, int64_t, int64_t, int64_t, c10::Half*);
template void transpose_images<float, c10::BFloat16>(const float*, int64_t, int64_t, int64_t, c10::BFloat16*);

}  // namespace deformconv
