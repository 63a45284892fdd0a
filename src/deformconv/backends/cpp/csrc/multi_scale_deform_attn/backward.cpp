// The backward kernel for the baseline instruction set.
#define DEFORMCONV_MSDA_ISA generic
#include "backward_impl.h"
