// Compiles the hot loops once per instruction set and picks the best at load time.
//
// The extension is built for the baseline x86-64 instruction set (so the same wheel runs on
// any x86-64 machine), which limits auto-vectorisation to 128-bit SSE. Functions marked
// DEFORMCONV_VECTORIZE are also compiled for AVX2 and AVX-512, and the dynamic loader chooses
// the version that the processor supports (GCC/Clang function multi-versioning).
// Helpers they call are forced inline so that they are compiled for the same target.
#pragma once

// The clones are selected by instruction-set level (x86-64-v4: AVX-512; v3: AVX2 + FMA), not by
// processor model ("arch=haswell" would only match that model and leave others on SSE2).
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define DEFORMCONV_VECTORIZE __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define DEFORMCONV_VECTORIZE __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DEFORMCONV_VECTORIZE
#endif

#if defined(__GNUC__) || defined(__clang__)
#define DEFORMCONV_INLINE inline __attribute__((always_inline))
#else
#define DEFORMCONV_INLINE inline
#endif
