// Declares the C++ CPU operators in the private namespace deformconv_cpp (the public ops in
// namespace deformconv are declared in Python and call these through the backend registry),
// and makes the shared library importable as the Python module deformconv._C.
#include <Python.h>
#include <torch/library.h>

#include "deform_conv2d/ops.h"

TORCH_LIBRARY(deformconv_cpp, m) {
  m.def(
      "deform_conv2d(Tensor input, Tensor offset, Tensor? mask, Tensor weight, Tensor? bias, "
      "int[2] stride, int[2] padding, int[2] dilation, int batch_chunk) -> Tensor");
  m.def(
      "deform_conv2d_backward(Tensor grad_output, Tensor input, Tensor offset, Tensor? mask, Tensor weight, "
      "int[2] stride, int[2] padding, int[2] dilation, int batch_chunk, bool need_input, "
      "bool need_offset_mask, bool need_weight) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(deformconv_cpp, CPU, m) {
  m.impl("deform_conv2d", &deformconv::deform_conv2d_forward);
  m.impl("deform_conv2d_backward", &deformconv::deform_conv2d_backward);
}

extern "C" {
// Importing deformconv._C loads the library, which runs the registrations above.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "C++ CPU kernels of deformconv", -1,
                                      nullptr};
  return PyModule_Create(&module);
}
}
