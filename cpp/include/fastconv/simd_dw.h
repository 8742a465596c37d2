// Vector helpers for the depthwise and pooling kernels (depthwise.cpp, pool.cpp) and the exponential
// of every kernel's activations (tiled_conv.h), written once with GCC vector extensions: the same
// source is a 16-byte (SSE2), 32-byte (AVX2) or 64-byte (AVX-512) vector depending on the flags of
// the translation unit that includes it. Everything lives in the ISA's own namespace and is static
// inline (see kernel_util.h).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "fastconv/kernel_util.h"

namespace fastconv::cpu::FC_ISA::vec {

typedef float vfloat __attribute__((vector_size(FC_VEC_BYTES)));
typedef int32_t vint __attribute__((vector_size(FC_VEC_BYTES)));
// The same vector with 4-byte alignment: loads and stores at any channel offset.
typedef float vfloat_u __attribute__((vector_size(FC_VEC_BYTES), aligned(4), may_alias));

constexpr int kLanes = FC_VEC_BYTES / 4;

static inline vfloat load(const float* p) { return *reinterpret_cast<const vfloat_u*>(p); }
static inline void store(float* p, vfloat v) { *reinterpret_cast<vfloat_u*>(p) = v; }
static inline vfloat splat(float s) { return vfloat{} + s; }
// A load kept in a register for all its uses: GCC otherwise may fold it into each FMA that reads it
// (one load per use) and keep every column's address offset live in its own register.
static inline vfloat load_once(const float* p) {
  vfloat v = load(p);
  __asm__("" : "+v"(v));
  return v;
}

// The first n < kLanes lanes; the rest are zero on load and left untouched on store; no access past
// the n floats. Loads are masked on AVX2 / AVX-512, elsewhere through a copy (a memcpy call per
// vector). Stores are masked on AVX-512; with narrower vectors they go in pieces of 4, 2 and 1
// floats: AVX2's masked store is slow on AMD cores, and a copy loop becomes a memcpy call (per row of
// a 6-channel tile: 40 % of a first layer's time, 4x128x128x3 2x2 stride 2).
#if defined(__AVX2__) && !defined(__AVX512F__)
static inline __m256i first_lanes(int64_t n) {
  const vint lane = {0, 1, 2, 3, 4, 5, 6, 7};
  return reinterpret_cast<__m256i>(lane < static_cast<int32_t>(n));
}
#endif
static inline vfloat load_partial(const float* p, int64_t n) {
#if defined(__AVX512F__)
  return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p);
#elif defined(__AVX2__)
  return _mm256_maskload_ps(p, first_lanes(n));
#else
  float tmp[kLanes] = {};
  std::memcpy(tmp, p, static_cast<size_t>(n) * sizeof(float));
  return load(tmp);
#endif
}
static inline void store_partial(float* p, vfloat v, int64_t n) {
#if defined(__AVX512F__)
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), v);
#elif defined(__SSE2__)
  if (n >= kLanes) return store(p, v);  // callers may pass a whole vector
#if defined(__AVX2__)
  __m128 part = _mm256_castps256_ps128(reinterpret_cast<__m256>(v));
  if (n >= 4) {
    _mm_storeu_ps(p, part);
    part = _mm256_extractf128_ps(reinterpret_cast<__m256>(v), 1);
    p += 4;
    n -= 4;
  }
#else
  __m128 part = reinterpret_cast<__m128>(v);
#endif
  if (n >= 2) {
    _mm_storel_pi(reinterpret_cast<__m64*>(p), part);
    part = _mm_movehl_ps(part, part);
    p += 2;
    n -= 2;
  }
  if (n >= 1) _mm_store_ss(p, part);
#else
  float tmp[kLanes];
  store(tmp, v);
  std::memcpy(p, tmp, static_cast<size_t>(n) * sizeof(float));
#endif
}

// Non-temporal store for outputs far larger than the caches: written around them, no read for
// ownership. In 16-byte pieces, so it needs only the 16-byte alignment NumPy guarantees; callers
// check it and fall back to store(). Each thread that streams calls stream_fence() when done.
static inline bool streamable(const float* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }
static inline void stream(float* p, vfloat v) {
#if defined(__SSE2__)
  float tmp[kLanes];
  store(tmp, v);  // folded away: the pieces come straight from the register
  for (int i = 0; i < kLanes; i += 4) _mm_stream_ps(p + i, _mm_loadu_ps(tmp + i));
#else
  store(p, v);
#endif
}
static inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// a > b ? a : b lane by lane (b when either is NaN), one instruction on x86.
static inline vfloat max_plain(vfloat a, vfloat b) {
#if defined(__AVX512F__)
  return _mm512_max_ps(a, b);
#elif defined(__AVX2__)
  return _mm256_max_ps(a, b);
#elif defined(__SSE2__)
  return _mm_max_ps(a, b);
#else
  return a > b ? a : b;
#endif
}

// Running maximum that keeps NaN like numpy.max: a NaN in v replaces m, and a NaN already in m
// stays (max_plain(v, m) returns m when m is NaN).
static inline vfloat max_nan(vfloat m, vfloat v) { return v != v ? v : max_plain(v, m); }

// lo <= x <= hi lane by lane, NaN staying NaN. On x86 one min and one max (the second operand is
// returned when either is NaN), instead of two compares and two blends on the FMA ports.
static inline vfloat clamp_keep_nan(vfloat x, float lo, float hi) {
#if defined(__AVX512F__)
  return _mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), x));
#elif defined(__AVX2__)
  return _mm256_min_ps(_mm256_set1_ps(hi), _mm256_max_ps(_mm256_set1_ps(lo), x));
#elif defined(__SSE2__)
  return _mm_min_ps(_mm_set1_ps(hi), _mm_max_ps(_mm_set1_ps(lo), x));
#else
  x = x < lo ? splat(lo) : x;
  return x > hi ? splat(hi) : x;
#endif
}

// e^(kSign * x) to about 2.2 ulp (measured over [-87, 88.7]): z = kSign * x = n ln2 + r with
// |r| <= ln2 / 2, e^r by a degree-5 polynomial 1 + r + r^2 q(r) fitted for the least maximum
// relative error on that interval (Lawson's reweighted least squares: 1.05e-7 before rounding), then
// times 2^n. Clamped to z in [-87, 89]: below, 2^n stays a normal float (e^-87 ~ 1.6e-38 where the
// true value may be smaller); above, n = 128 from z = 88.38 gives +inf, as e^z overflows from 88.72
// on (the few inputs between saturate every activation anyway), so SiLU(-inf) = -inf / inf is NaN
// like the reference. NaN stays NaN.
// The activation epilogue is bound by the FMA pipes (Zen 4: one 16-lane FMA, multiply or scalef per
// cycle; adds, min / max and integer operations run beside them), so its cost is counted in those:
// 9 per exponential, 10 with the degree-6 polynomial and a separate negation and multiply by 2^n it
// replaces (SiLU per 16 floats 3.85 -> 3.36 ns). The sign is folded into the constants: r = kSign * q
// with q = x - kSign n ln2, and q(r) evaluated in q with the odd coefficients' signs flipped.
//
// N vectors in place, each step of the chain over all N before the next step: one exponential is
// a ~25-deep dependency chain (~70 cycles with the divide of the activations), and written one
// vector after another GCC keeps the chains apart in the instruction stream, where the scheduler
// holds too few operations to overlap more than two or three of them.
template <int kSign, int N>
__attribute__((always_inline)) static inline void exp_signed(vfloat (&x)[N]) {
  static_assert(kSign == 1 || kSign == -1, "e^x or e^-x");
  constexpr float s = kSign;
  const float round_magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  vfloat t[N], n[N];
#pragma GCC unroll 16
  for (int j = 0; j < N; ++j) {
    x[j] = kSign > 0 ? clamp_keep_nan(x[j], -87.0f, 89.0f) : clamp_keep_nan(x[j], -89.0f, 87.0f);
  }
#pragma GCC unroll 16
  for (int j = 0; j < N; ++j) t[j] = x[j] * (s * 1.44269504f) + round_magic;  // n in the low mantissa bits
#pragma GCC unroll 16
  for (int j = 0; j < N; ++j) n[j] = t[j] - round_magic;
  // ln 2 = 2839 / 4096 + lo: n * 2839 / 4096 is exact for |n| <= 127, so q loses no bits.
#pragma GCC unroll 16
  for (int j = 0; j < N; ++j) x[j] = x[j] - n[j] * (s * 0.693115234375f);
#pragma GCC unroll 16
  for (int j = 0; j < N; ++j) x[j] = x[j] - n[j] * (s * 3.19461833e-5f);  // x is q from here on
  vfloat p[N];
#pragma GCC unroll 16
  for (int j = 0; j < N; ++j) p[j] = s * 0.008312511257827282f * x[j] + 0.04189009964466095f;
#pragma GCC unroll 16
  for (int j = 0; j < N; ++j) p[j] = p[j] * x[j] + s * 0.16667114198207855f;
#pragma GCC unroll 16
  for (int j = 0; j < N; ++j) p[j] = p[j] * x[j] + 0.499992311000824f;
#pragma GCC unroll 16
  for (int j = 0; j < N; ++j) p[j] = p[j] * x[j] + s;
#pragma GCC unroll 16
  for (int j = 0; j < N; ++j) p[j] = p[j] * x[j] + 1.0f;
#pragma GCC unroll 16
  for (int j = 0; j < N; ++j) {
#if defined(__AVX512F__)
    x[j] = _mm512_scalef_ps(p[j], n[j]);
#else
    // 2^n: t's bits are those of round_magic (a multiple of 2^22) plus n, so (bits(t) + 127) << 23
    // is n + 127 in the exponent field, the same as converting n, without the conversion.
    const vint bits = (reinterpret_cast<const vint&>(t[j]) + 127) << 23;
    x[j] = p[j] * reinterpret_cast<const vfloat&>(bits);
#endif
  }
}

// The activations of activation.h on N vectors in place, each step over all N (NaN stays NaN in
// every one). See activate below.
template <int N>
__attribute__((always_inline)) static inline void activate_side_by_side(Activation act, vfloat (&v)[N]) {
  const vfloat zero = {};
  vfloat e[N];
  switch (act) {
    case Activation::kNone: return;
    // One max (and one min) on x86, which return the second operand when either is NaN: compares
    // and blends took twice the operations, a few percent of a short reduction's tile.
    case Activation::kRelu:
#pragma GCC unroll 16
      for (int j = 0; j < N; ++j) v[j] = max_plain(zero, v[j]);
      return;
    case Activation::kRelu6:
#pragma GCC unroll 16
      for (int j = 0; j < N; ++j) v[j] = clamp_keep_nan(v[j], 0.0f, 6.0f);
      return;
    case Activation::kSigmoid:
    case Activation::kSilu:
#pragma GCC unroll 16
      for (int j = 0; j < N; ++j) e[j] = v[j];
      exp_signed<-1>(e);
#pragma GCC unroll 16
      for (int j = 0; j < N; ++j) v[j] = (act == Activation::kSilu ? v[j] : splat(1.0f)) / (1.0f + e[j]);
      return;
    case Activation::kTanh: {
      // tanh v = v P(v^2) / Q(v^2), P and Q of degree 4, on |v| <= 9 (from 9.01 on tanh rounds to
      // +-1 in float), fitted for the least maximum relative error (reweighted least squares,
      // 2.1e-8 before rounding; measured over the floats: at most 4.8 ulp, 5.1 without FMAs). 15
      // operations against the 20 of 1 - 2 / (e^2|v| + 1), whose 1 - ... also lost every bit of
      // a small |v| (tanh 1e-30 came out 0); the result is clamped to [-1, 1], which rounding can
      // pass by an ulp or two near the ends.
#pragma GCC unroll 16
      for (int j = 0; j < N; ++j) v[j] = clamp_keep_nan(v[j], -9.0f, 9.0f);
      vfloat square[N], q[N];
#pragma GCC unroll 16
      for (int j = 0; j < N; ++j) square[j] = v[j] * v[j];
#pragma GCC unroll 16
      for (int j = 0; j < N; ++j) {
        q[j] = 7.776677080073569e-07f * square[j] + 0.0003285656275693327f;
        q[j] = q[j] * square[j] + 0.025877032428979874f;
        q[j] = q[j] * square[j] + 0.46714353561401367f;
        q[j] = q[j] * square[j] + 1.0f;
      }
#pragma GCC unroll 16
      for (int j = 0; j < N; ++j) {
        vfloat p = 1.3354946482024843e-08f * square[j] + 2.0609295461326838e-05f;
        p = p * square[j] + 0.0034956014715135098f;
        p = p * square[j] + 0.1338103711605072f;
        p = p * square[j] + 1.0f;
        v[j] = clamp_keep_nan(v[j] * p / q[j], -1.0f, 1.0f);
      }
      return;
    }
  }
}

// The activation on N vectors in place, four side by side at a time: one at a time the
// exponential's dependency chains left the FMA pipes idle (tanh, sigmoid and SiLU over a long run
// 1.15-1.2x slower); eight at a time spilled on AVX2 (1.3x slower there).
constexpr int kActivateRun = 4;
template <int N>
__attribute__((always_inline)) static inline void activate(Activation act, vfloat (&v)[N]) {
  constexpr int kRun = kActivateRun;
#pragma GCC unroll 16
  for (int i = 0; i + kRun <= N; i += kRun) activate_side_by_side(act, *reinterpret_cast<vfloat(*)[kRun]>(v + i));
#pragma GCC unroll 4
  for (int i = N / kRun * kRun; i < N; ++i) activate_side_by_side(act, *reinterpret_cast<vfloat(*)[1]>(v + i));
}

__attribute__((always_inline)) static inline vfloat activate(Activation act, vfloat v) {
  vfloat one[1] = {v};
  activate_side_by_side(act, one);
  return one[0];
}

// The activation over `count` contiguous floats in place, for kernels that store plain sums first
// and activate a finished run of output rows (the tiles' registers are all taken by accumulators;
// here one short loop keeps the constants in registers).
template <Activation A>
static inline void activate_run(float* y, int64_t count) {
  constexpr int kRun = kActivateRun;  // one group of activate's per step
  int64_t i = 0;
  for (; i + kRun * kLanes <= count; i += kRun * kLanes) {
    vfloat v[kRun];
#pragma GCC unroll 4
    for (int j = 0; j < kRun; ++j) v[j] = load(y + i + j * kLanes);
    activate(A, v);
#pragma GCC unroll 4
    for (int j = 0; j < kRun; ++j) store(y + i + j * kLanes, v[j]);
  }
  for (; i + kLanes <= count; i += kLanes) store(y + i, activate(A, load(y + i)));
  // Partial vectors: an overlapping one would activate some floats twice.
  if (i < count) store_partial(y + i, activate(A, load_partial(y + i, count - i)), count - i);
}

static inline void activate_row(Activation act, float* y, int64_t count) {
  switch (act) {
    case Activation::kNone: return;
    case Activation::kRelu: return activate_run<Activation::kRelu>(y, count);
    case Activation::kRelu6: return activate_run<Activation::kRelu6>(y, count);
    case Activation::kSigmoid: return activate_run<Activation::kSigmoid>(y, count);
    case Activation::kTanh: return activate_run<Activation::kTanh>(y, count);
    case Activation::kSilu: return activate_run<Activation::kSilu>(y, count);
  }
}

}  // namespace fastconv::cpu::FC_ISA::vec
