"""CUDA C sources of psmpi's GPU kernels, all in one place.

Each entry of :data:`SOURCES` is a self-contained translation unit (no
``#include``: NVRTC, which CuPy uses, has no system headers) whose
``extern "C"`` kernels come in ``_f32`` and ``_f64`` variants.  CuPy builds
them lazily (:mod:`psmpi.kernels`); the test suite compiles every source with
``nvcc --ptx`` so that a syntax error cannot land even without a GPU.

Magnitude keys: for float64 the key of x is its bit pattern without the sign
bit (an unsigned integer that orders like |x|), NaN mapped to the key of +inf,
so the device ranks NaN exactly like the CPU path (tied with infinities).
"""
from __future__ import annotations

from dataclasses import dataclass

_KEYS = r"""
__device__ __forceinline__ unsigned long long mag_key_f64(double v) {
    unsigned long long b = (unsigned long long)__double_as_longlong(v) & 0x7FFFFFFFFFFFFFFFULL;
    return b > 0x7FF0000000000000ULL ? 0x7FF0000000000000ULL : b;  /* NaN -> +inf */
}
__device__ __forceinline__ unsigned int mag_key_f32(float v) {
    unsigned int b = (unsigned int)__float_as_int(v) & 0x7FFFFFFFU;
    return b > 0x7F800000U ? 0x7F800000U : b;
}
"""

TOPK = _KEYS + r"""
/* Radix select, one 8-bit digit per pass: histogram of digit (key >> shift) & 255
   over the entries whose key matches `prefix` on the bits of `prefix_mask`. */
#define RADIX_HIST(NAME, T, K, KEYFN)                                                   \
extern "C" __global__ void NAME(const T* __restrict__ x, long long n, K prefix,         \
                                K prefix_mask, int shift, unsigned int* __restrict__ hist) { \
    __shared__ unsigned int local[256];                                                 \
    for (int i = threadIdx.x; i < 256; i += blockDim.x) local[i] = 0;                   \
    __syncthreads();                                                                    \
    long long stride = (long long)blockDim.x * gridDim.x;                               \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) { \
        K key = KEYFN(x[i]);                                                            \
        if ((key & prefix_mask) == prefix)                                              \
            atomicAdd(&local[(unsigned int)(key >> shift) & 255U], 1U);                 \
    }                                                                                   \
    __syncthreads();                                                                    \
    for (int i = threadIdx.x; i < 256; i += blockDim.x)                                 \
        if (local[i]) atomicAdd(&hist[i], local[i]);                                    \
}
RADIX_HIST(radix_hist_f64, double, unsigned long long, mag_key_f64)
RADIX_HIST(radix_hist_f32, float, unsigned int, mag_key_f32)

/* flag[i] = 2 if key(x[i]) > kth, 1 if equal, 0 if below. */
#define RANK_FLAGS(NAME, T, K, KEYFN)                                                   \
extern "C" __global__ void NAME(const T* __restrict__ x, long long n, K kth,            \
                                signed char* __restrict__ flag) {                       \
    long long stride = (long long)blockDim.x * gridDim.x;                               \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) { \
        K key = KEYFN(x[i]);                                                            \
        flag[i] = key > kth ? 2 : (key == kth ? 1 : 0);                                 \
    }                                                                                   \
}
RANK_FLAGS(rank_flags_f64, double, unsigned long long, mag_key_f64)
RANK_FLAGS(rank_flags_f32, float, unsigned int, mag_key_f32)

"""

EF21 = r"""
/* out = v - g, the vector EF21 compresses (d = v - g). */
#define SUB(NAME, T)                                                                    \
extern "C" __global__ void NAME(const T* __restrict__ v, const T* __restrict__ g,       \
                                T* __restrict__ out, long long n) {                     \
    long long stride = (long long)blockDim.x * gridDim.x;                               \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) \
        out[i] = v[i] - g[i];                                                           \
}
SUB(sub_f64, double)
SUB(sub_f32, float)

/* The message and the state update in one pass over the K selected entries:
   c_j = (W) diff[idx[j]] rounded to the wire dtype W, values[j] = c_j and
   g[idx[j]] += c_j, exactly as the CPU path (Sparse payload, then add_to). */
#define GATHER_APPLY(NAME, T, W)                                                        \
extern "C" __global__ void NAME(const T* __restrict__ diff, const long long* __restrict__ idx, \
                                long long k, W* __restrict__ values, double* __restrict__ g) { \
    long long stride = (long long)blockDim.x * gridDim.x;                               \
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < k; j += stride) { \
        long long i = idx[j];                                                           \
        W c = (W)diff[i];                                                               \
        values[j] = c;                                                                  \
        g[i] = __dadd_rn(g[i], (double)c);                                              \
    }                                                                                   \
}
GATHER_APPLY(gather_apply_f64_f32, double, float)
GATHER_APPLY(gather_apply_f64_f64, double, double)
"""

SIGNS = r"""
/* Sign bits packed like numpy.packbits(numpy.signbit(x)): byte b holds
   entries 8b..8b+7, the first in the most significant bit, zero padding. */
#define PACK_SIGNS(NAME, T, SIGNFN)                                                     \
extern "C" __global__ void NAME(const T* __restrict__ x, long long n,                   \
                                unsigned char* __restrict__ out) {                      \
    long long nbytes = (n + 7) / 8;                                                     \
    long long stride = (long long)blockDim.x * gridDim.x;                               \
    for (long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x; b < nbytes; b += stride) { \
        unsigned int byte = 0;                                                          \
        for (int j = 0; j < 8; ++j) {                                                   \
            long long i = 8 * b + j;                                                    \
            unsigned int bit = i < n ? SIGNFN(x[i]) : 0U;                               \
            byte |= bit << (7 - j);                                                     \
        }                                                                               \
        out[b] = (unsigned char)byte;                                                   \
    }                                                                                   \
}
#define SIGN_F64(v) ((unsigned int)((unsigned long long)__double_as_longlong(v) >> 63))
#define SIGN_F32(v) ((unsigned int)((unsigned int)__float_as_int(v) >> 31))
PACK_SIGNS(pack_signs_f64, double, SIGN_F64)
PACK_SIGNS(pack_signs_f32, float, SIGN_F32)
"""


@dataclass(frozen=True)
class KernelSource:
    name: str
    code: str
    kernels: tuple[str, ...]


SOURCES: dict[str, KernelSource] = {
    s.name: s for s in (
        KernelSource("topk", TOPK, ("radix_hist_f64", "radix_hist_f32", "rank_flags_f64", "rank_flags_f32")),
        KernelSource("ef21", EF21, ("sub_f64", "sub_f32", "gather_apply_f64_f32", "gather_apply_f64_f64")),
        KernelSource("signs", SIGNS, ("pack_signs_f64", "pack_signs_f32")),
    )
}
