#include "fused_forward.h"

#include <omp.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "channel_loops.h"
#include "micro_kernel.h"
#include "sampling.h"

namespace deformconv {

namespace {

// Rows (output pixels) of a panel, about: each panel streams the whole packed weight once (2 *
// rows flops per weight element), and a block of its columns (rows x depth block) must stay in
// the L2 cache and in few pages (the rows are a whole column row apart).
constexpr int64_t kPanelRows = 120;

// Panel size (a multiple of nr) and count: about kPanelRows rows, the same number of panels
// per thread. The panel boundaries do not change any result.
void plan_panels(int64_t rows, int64_t threads, int64_t nr, int64_t& panel_rows, int64_t& count) {
  const int64_t target = kPanelRows;
  int64_t panels = std::max<int64_t>(1, (rows + target - 1) / target);
  panels = (panels + threads - 1) / threads * threads;
  panel_rows = ((rows + panels - 1) / panels + nr - 1) / nr * nr;
  count = (rows + panel_rows - 1) / panel_rows;
}

// Output channels [block * mr, block * mr + mr) of the weight as [K * C][mr] (zero past C_out):
// the depth index p = k * C + c is that of the sampled columns. The inner loop gathers one
// weight per output channel (a vector gather where the processor has one).
DEFORMCONV_VECTORIZE void pack_block(const float* weight, const Geometry& g, int64_t mr, int64_t block,
                                     float* packed) {
  const int64_t K = g.kernel_points, C = g.channels, depth = K * C;
  const int64_t valid = std::min(mr, g.out_channels - block * mr);
  const float* source = weight + block * mr * depth;
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t k = 0; k < K; ++k) {
      float* target = packed + (k * C + c) * mr;
      const float* column = source + c * K + k;
      for (int64_t j = 0; j < valid; ++j) {
        target[j] = column[j * depth];
      }
      for (int64_t j = valid; j < mr; ++j) {
        target[j] = 0.0f;
      }
    }
  }
}

// The weight as [ceil(C_out / mr)][K * C][mr] (see pack_block).
std::vector<float> pack_weight(const float* weight, const Geometry& g, int64_t mr) {
  const int64_t depth = g.kernel_points * g.channels, blocks = (g.out_channels + mr - 1) / mr;
  std::vector<float> packed(blocks * depth * mr);
#pragma omp parallel for
  for (int64_t block = 0; block < blocks; ++block) {
    pack_block(weight, g, mr, block, packed.data() + block * depth * mr);
  }
  return packed;
}

// Rows [first, last) of the columns, [rows][K][C], as the cpp backend's sample_columns writes
// them for one convolution group (same arithmetic, so the same values).
DEFORMCONV_VECTORIZE void sample_panel(const float* input, const float* offset, const float* mask,
                                       const Geometry& g, PointTable<float>& table, int64_t first, int64_t last,
                                       float* columns) {
  const int64_t K = g.kernel_points, P = g.out_pixels, C = g.channels, per_group = g.per_offset_group;
  const int64_t points = g.offset_groups * K;
  for (int64_t row = first; row < last; ++row) {
    const float* image = input + (row / P) * g.image_pixels() * C;
    table.fill(offset + row * 2 * points, mask == nullptr ? nullptr : mask + row * points, row % P, 0, points);
    float* row_columns = columns + (row - first) * K * C;
    for (int64_t group = 0; group < g.offset_groups; ++group) {
      for (int64_t k = 0; k < K; ++k) {
        const int64_t point = group * K + k;
        const auto s = table.point(point);
        const float scale = table.scale(point);
        const float weight[4] = {s.weight[0] * scale, s.weight[1] * scale, s.weight[2] * scale, s.weight[3] * scale};
        blend(row_columns + k * C + group * per_group, image + group * per_group, C, s, weight, per_group);
      }
    }
  }
}

// output[image][o][pixel] = bias[o] + products[row - first][o] for rows [first, last).
void write_rows(const float* products, int64_t ldp, const float* bias, const Geometry& g, int64_t first, int64_t last,
                float* output) {
  const int64_t P = g.out_pixels;
  for (int64_t row = first; row < last;) {
    const int64_t image = row / P, pixel = row % P, length = std::min(last - row, P - pixel);
    float* target = output + image * g.out_channels * P + pixel;
    const float* source = products + (row - first) * ldp;
    for (int64_t o = 0; o < g.out_channels; ++o) {
      const float b = bias == nullptr ? 0.0f : bias[o];
      for (int64_t i = 0; i < length; ++i) {
        target[o * P + i] = source[i * ldp + o] + b;
      }
    }
    row += length;
  }
}

}  // namespace

bool fused_forward_applies(const Geometry& g) { return g.groups == 1 && micro_kernel().fn != nullptr; }

void fused_forward(const float* input, const float* offset, const float* mask, const float* weight,
                   const float* bias, const Geometry& g, int64_t images, float* output) {
  const MicroKernel& kernel = micro_kernel();
  const int64_t depth = g.kernel_points * g.channels, rows = images * g.out_pixels;
  if (rows == 0) {
    return;
  }
  const int64_t blocks = (g.out_channels + kernel.mr - 1) / kernel.mr, ldp = blocks * kernel.mr;
  const std::vector<float> packed = pack_weight(weight, g, kernel.mr);
  int64_t panel_rows = 0, count = 0;
  plan_panels(rows, omp_get_max_threads(), kernel.nr, panel_rows, count);
#pragma omp parallel
  {
    // Left uninitialised: every entry read is written first.
    const std::unique_ptr<float[]> columns(new float[panel_rows * depth]);
    const std::unique_ptr<float[]> products(new float[panel_rows * ldp]);
    PointTable<float> table(g);
#pragma omp for schedule(static)
    for (int64_t panel = 0; panel < count; ++panel) {
      const int64_t first = panel * panel_rows, last = std::min(rows, first + panel_rows);
      const int64_t used = (last - first + kernel.nr - 1) / kernel.nr * kernel.nr;
      // The micro-kernel multiplies whole blocks of nr rows: the rows past the panel's end are zero.
      std::fill(columns.get() + (last - first) * depth, columns.get() + used * depth, 0.0f);
      sample_panel(input, offset, mask, g, table, first, last, columns.get());
      for (int64_t p0 = 0; p0 < depth; p0 += kernel.depth) {
        const int64_t length = std::min(kernel.depth, depth - p0);
        for (int64_t block = 0; block < blocks; ++block) {
          const float* a = packed.data() + (block * depth + p0) * kernel.mr;
          for (int64_t i = 0; i < used; i += kernel.nr) {
            kernel.fn(a, columns.get() + i * depth + p0, depth, length, products.get() + i * ldp + block * kernel.mr,
                      ldp, p0 > 0);
          }
        }
      }
      write_rows(products.get(), ldp, bias, g, first, last, output);
    }
  }
}

}  // namespace deformconv
