// Schemas and CPU kernels of deform_conv2d in the namespace deformconv_cpp (declared in
// ../register.cpp); backends/cpp/deform_conv2d.py calls them.
#include <torch/csrc/stable/library.h>

#include "ops.h"

STABLE_TORCH_LIBRARY_FRAGMENT(deformconv_cpp, m) {
  m.def(
      "deform_conv2d(Tensor input, Tensor offset, Tensor? mask, Tensor weight, Tensor? bias, "
      "int[2] stride, int[2] padding, int[2] dilation, int batch_chunk) -> Tensor");
  m.def(
      "deform_conv2d_backward(Tensor grad_output, Tensor input, Tensor offset, Tensor? mask, Tensor weight, "
      "int[2] stride, int[2] padding, int[2] dilation, int batch_chunk, bool need_input, "
      "bool need_offset_mask, bool need_weight) -> (Tensor, Tensor, Tensor, Tensor)");
}

STABLE_TORCH_LIBRARY_IMPL(deformconv_cpp, CPU, m) {
  m.impl("deform_conv2d", TORCH_BOX(&deformconv::deform_conv2d_forward));
  m.impl("deform_conv2d_backward", TORCH_BOX(&deformconv::deform_conv2d_backward));
}
