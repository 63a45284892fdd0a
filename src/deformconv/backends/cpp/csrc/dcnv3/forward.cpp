// DCNv3 / DCNv4 forward on CPU: channels-last, one output pixel per iteration, the bilinear
// weights of a sample point computed once and applied to all the channels of its group.
#include <torch/csrc/stable/ops.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <algorithm>
#include <vector>

#include "channels.h"
#include "kernels.h"

namespace deformconv::dcn {

template <typename scalar_t, typename acc_t>
void forward(const Geometry& g, const scalar_t* input, const scalar_t* offset, const scalar_t* mask, scalar_t* output) {
  const int64_t pixels = g.pixels(), depth = g.group_channels;
  torch::stable::parallel_for(0, g.batch * pixels, g.pixel_grain(), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(depth);
    for (int64_t q = begin; q < end; ++q) {
      const int64_t n = q / pixels, oy = (q % pixels) / g.out_w, ox = q % g.out_w;
      const scalar_t* image = input + n * g.height * g.width * g.channels;
      for (int64_t grp = 0; grp < g.group; ++grp) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        const scalar_t* off = offset + g.offset_at(q, grp);
        const scalar_t* msk = mask + g.mask_at(q, grp);
        for (int64_t p = 0; p < g.points; ++p) {
          const Corners<acc_t> c = point_corners<scalar_t, acc_t>(g, off + 2 * p, oy, ox, p);
          if (!c.any) continue;
          // A corner outside the image has weight 0 and reads pixel 0, so all four go in one pass.
          const acc_t m = acc_t(msk[p]);
          const scalar_t* src[4];
          acc_t w[4];
          for (int k = 0; k < 4; ++k) {
            src[k] = image + c.pixel[k] * g.channels + grp * depth;
            w[k] = m * c.weight[k];
          }
          blend4(acc.data(), src, w, depth);
        }
        scalar_t* dst = output + q * g.channels + grp * depth;
        for (int64_t d = 0; d < depth; ++d) dst[d] = scalar_t(acc[d]);
      }
    }
  });
}

template void forward<float, float>(const Geometry&, const float*, const float*, const float*, float*);
template void forward<double, double>(const Geometry&, const double*, const double*, const double*, double*);
template void forward<c10::Half, float>(const Geometry&, const c10::Half*, const c10::Half*, const c10::Half*,
                                        c10::Half*);
template void forward<c10::BFloat16, float>(const Geometry&, const c10::BFloat16*, const c10::BFloat16*,
                                            const c10::BFloat16*, c10::BFloat16*);

}  // namespace deformconv::dcn
