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

// Rows (output pixels) of a panel, at most: each panel streams the whole packed weight once (2 *
// rows flops per weight element), and a block of its columns (rows x depth block) must stay in
// the L2 cache and in few pages (consecutive rows are a whole row of columns apart).
constexpr int64_t kPanelRows = 120;
// Panels per thread, at least, while they keep kMinPanelBlocks blocks of nr rows: threads take
// panels as they finish (a thread slowed down by another process on its core gets fewer).
constexpr int64_t kPanelsPerThread = 2;
constexpr int64_t kMinPanelBlocks = 4;

// Panel size (a multiple of nr) and count. The panel boundaries do not change any result.
void plan_panels(int64_t rows, int64_t threads, int64_t nr, int64_t& panel_rows, int64_t& count) {
  const int64_t most = std::max<int64_t>(1, rows / (kMinPanelBlocks * nr));
  const int64_t panels = std::min(most, std::max(kPanelsPerThread * threads, (rows + kPanelRows - 1) / kPanelRows));
  panel_rows = ((rows + panels - 1) / panels + nr - 1) / nr * nr;
  count = (rows + panel_rows - 1) / panel_rows;
}

// Padding of each row of the panel buffers, one cache line: rows a multiple of 4 KiB apart would
// share L1 cache sets (about 10% slower with 32 groups of 8 channels, whose products rows are 4 KiB).
constexpr int64_t kRowPadding = 16;

// Sizes of the product: per convolution group, `blocks` blocks of mr output channels over a
// depth of K * C_in/groups; a row of products holds groups * blocks * mr channels (and padding).
struct Blocks {
  int64_t mr, depth, blocks, row;

  Blocks(const Geometry& g, int64_t mr_)
      : mr(mr_),
        depth(g.group_columns()),
        blocks((g.out_per_group + mr_ - 1) / mr_),
        row(g.groups * ((g.out_per_group + mr_ - 1) / mr_) * mr_ + kRowPadding) {}
};

// Output channels [block * mr, block * mr + mr) of convolution group `group` of the weight as
// [K * C_in/groups][mr] (zero past the group's channels): the depth index p = k * C_in/groups + c
// is that of the group's sampled columns. The inner loop gathers one weight per output channel
// (a vector gather where the processor has one).
DEFORMCONV_VECTORIZE void pack_block(const float* weight, const Geometry& g, const Blocks& b, int64_t group,
                                     int64_t block, float* packed) {
  const int64_t K = g.kernel_points, C = g.in_per_group;
  const int64_t valid = std::min(b.mr, g.out_per_group - block * b.mr);
  const float* source = weight + (group * g.out_per_group + block * b.mr) * b.depth;
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t k = 0; k < K; ++k) {
      float* target = packed + (k * C + c) * b.mr;
      const float* column = source + c * K + k;
      for (int64_t j = 0; j < valid; ++j) {
        target[j] = column[j * b.depth];
      }
      for (int64_t j = valid; j < b.mr; ++j) {
        target[j] = 0.0f;
      }
    }
  }
}

// The weight as [groups][blocks][K * C_in/groups][mr] (see pack_block).
std::vector<float> pack_weight(const float* weight, const Geometry& g, const Blocks& b) {
  std::vector<float> packed(g.groups * b.blocks * b.depth * b.mr);
#pragma omp parallel for collapse(2)
  for (int64_t group = 0; group < g.groups; ++group) {
    for (int64_t block = 0; block < b.blocks; ++block) {
      pack_block(weight, g, b, group, block, packed.data() + (group * b.blocks + block) * b.depth * b.mr);
    }
  }
  return packed;
}

// Rows [first, last) of the columns, [rows][K][C] with rows `stride` floats apart, with the
// arithmetic of the cpp backend's sample_columns (so the same values): the bilinear samples times
// the mask.
DEFORMCONV_VECTORIZE void sample_panel(const float* input, const float* offset, const float* mask,
                                       const Geometry& g, PointTable<float>& table, int64_t first, int64_t last,
                                       int64_t stride, float* columns) {
  const int64_t K = g.kernel_points, P = g.out_pixels, C = g.channels, per_group = g.per_offset_group;
  const int64_t points = g.offset_groups * K;
  for (int64_t row = first; row < last; ++row) {
    const float* image = input + (row / P) * g.image_pixels() * C;
    table.fill(offset + row * 2 * points, mask == nullptr ? nullptr : mask + row * points, row % P, 0, points);
    float* row_columns = columns + (row - first) * stride;
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

// A depth block of a convolution group's product: kernel points [point, point + depth.segments),
// input channels [channel, channel + depth.length) of the group.
struct DepthBlock {
  int64_t point, channel;
  Depth depth;
};

// The depth blocks, in order, of about `size` entries: whole kernel points when a group has
// fewer input channels, else parts of one.
std::vector<DepthBlock> depth_blocks(const Geometry& g, int64_t size) {
  const int64_t C = g.in_per_group, K = g.kernel_points;
  const int64_t points = C >= size ? 1 : size / C, channels = std::min(C, size);
  std::vector<DepthBlock> blocks;
  for (int64_t k = 0; k < K; k += points) {
    for (int64_t c = 0; c < C; c += channels) {
      const int64_t segments = std::min(points, K - k), length = std::min(channels, C - c);
      // A single group's kernel points follow each other: one run.
      const Depth depth = length == g.channels ? Depth{1, segments * length, 0} : Depth{segments, length, g.channels};
      blocks.push_back({k, c, depth});
    }
  }
  return blocks;
}

// output[image][o][pixel] = bias[o] + products[row - first][o'] for rows [first, last), where
// o' is output channel o's place in a row of products.
void write_rows(const float* products, const Blocks& b, const float* bias, const Geometry& g, int64_t first,
                int64_t last, float* output) {
  const int64_t P = g.out_pixels;
  for (int64_t row = first; row < last;) {
    const int64_t image = row / P, pixel = row % P, length = std::min(last - row, P - pixel);
    float* target = output + image * g.out_channels * P + pixel;
    const float* source = products + (row - first) * b.row;
    for (int64_t o = 0; o < g.out_channels; ++o) {
      const int64_t group = o / g.out_per_group, place = group * b.blocks * b.mr + (o - group * g.out_per_group);
      const float shift = bias == nullptr ? 0.0f : bias[o];
      for (int64_t i = 0; i < length; ++i) {
        target[o * P + i] = source[i * b.row + place] + shift;
      }
    }
    row += length;
  }
}

}  // namespace

bool fused_forward_applies(const Geometry&) { return micro_kernel().fn != nullptr; }

void fused_forward(const float* input, const float* offset, const float* mask, const float* weight,
                   const float* bias, const Geometry& g, int64_t images, float* output) {
  const MicroKernel& kernel = micro_kernel();
  const int64_t rows = images * g.out_pixels, row_columns = g.kernel_points * g.channels + kRowPadding;
  if (rows == 0) {
    return;
  }
  const Blocks b(g, kernel.mr);
  const std::vector<float> packed = pack_weight(weight, g, b);
  const std::vector<DepthBlock> depths = depth_blocks(g, kernel.depth);
  const int64_t threads = omp_get_max_threads();
  int64_t panel_rows = 0, count = 0;
  plan_panels(rows, threads, kernel.nr, panel_rows, count);
  // Every thread's buffers, allocated here: an allocation failure must not happen inside the
  // parallel region, where an exception cannot leave. Left uninitialised: every entry read is
  // written first.
  const int64_t scratch_size = panel_rows * (row_columns + b.row);
  const std::unique_ptr<float[]> scratch(new float[threads * scratch_size]);
  std::vector<PointTable<float>> tables;
  tables.reserve(threads);
  for (int64_t t = 0; t < threads; ++t) {
    tables.emplace_back(g);
  }
#pragma omp parallel num_threads(threads)
  {
    const int64_t thread = omp_get_thread_num();
    float* const columns = scratch.get() + thread * scratch_size;
    float* const products = columns + panel_rows * row_columns;
    PointTable<float>& table = tables[thread];
#pragma omp for schedule(dynamic, 1)
    for (int64_t panel = 0; panel < count; ++panel) {
      const int64_t first = panel * panel_rows, last = std::min(rows, first + panel_rows);
      const int64_t used = (last - first + kernel.nr - 1) / kernel.nr * kernel.nr;
      // The micro-kernel multiplies whole blocks of nr rows: the rows past the panel's end are zero.
      std::fill(columns + (last - first) * row_columns, columns + used * row_columns, 0.0f);
      sample_panel(input, offset, mask, g, table, first, last, row_columns, columns);
      for (const DepthBlock& d : depths) {
        const int64_t p0 = d.point * g.in_per_group + d.channel;  // depth index of the block's start
        for (int64_t group = 0; group < g.groups; ++group) {
          const float* bs = columns + d.point * g.channels + group * g.in_per_group + d.channel;
          for (int64_t block = 0; block < b.blocks; ++block) {
            const int64_t place = group * b.blocks + block;
            const float* a = packed.data() + (place * b.depth + p0) * b.mr;
            for (int64_t i = 0; i < used; i += kernel.nr) {
              kernel.fn(a, bs + i * row_columns, row_columns, d.depth, products + i * b.row + place * b.mr,
                        b.row, p0 > 0);
            }
          }
        }
      }
      write_rows(products, b, bias, g, first, last, output);
    }
  }
}

}  // namespace deformconv
