// The forward kernel for the baseline instruction set.
#define DEFORMCONV_MSDA_ISA generic
#include "forward_impl.h"
