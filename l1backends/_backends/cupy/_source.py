"""The CUDA C++ source of the CuPy backend's kernels, and the names of its specializations.

The source needs no header.  Its ``L1_OP_*``, ``L1_FINISH_*`` and ``L1_SCALE_*``
constants are generated from the Python enums
(:func:`~l1backends._backends._cuda_launch.cuda_constants`).  float16 and float32
values are widened to float64 and rounded back with inline PTX ``cvt``, which
keeps subnormals whatever flags CuPy's NVRTC appends (its ``-ftz=true`` would
make a plain cast flush them); complex numbers are plain ``float2``/``double2``
pairs.  The same text is compiled by CuPy's ``RawModule`` at run time and by
NVRTC in the tests, for every specialization of :func:`name_expressions`.

Kernels
-------
``l1_dense<Tag, OPS, FINISH>``
    Rows of ``count`` elements stored one after another, 16-byte aligned, of one
    real dtype: 128-bit loads and stores.  What the pass computes (``OPS``, the
    :class:`~l1backends._backends._cuda_launch.Op` bits) and how rows are finished
    (``FINISH``) are template constants, so the loop tests no flag; grad_output and
    Σw are read, and the gradient's scale computed, once per row.
``l1_strided<Tag>``
    Any layout, any pass (the same codes, read from the ``Layout`` argument).  It
    takes the same elements in the same order as ``l1_dense``
    (:mod:`l1backends._backends._cuda_launch`), so both give the same bits.
``l1_finish<Tag>``
    Adds each row's chunk sums in a fixed order (one block per row) and finishes it.
"""

from __future__ import annotations

from .._cuda_launch import Op, cuda_constants
from .._cuda_passes import OPERANDS
from .._iteration import MAX_GROUP_DIMS

__all__ = [
    "COMPILE_OPTIONS",
    "DENSE_TAGS",
    "SOURCE",
    "TAGS",
    "dense_variants",
    "name_expressions",
    "specialization",
]

# NVRTC options for the source; CuPy appends its own "-ftz=true" after them (last one wins).
COMPILE_OPTIONS = ("-std=c++17",)

#: The kernel tag of each compute dtype.
TAGS = {
    "float16": "F16",
    "float32": "F32",
    "float64": "F64",
    "complex64": "C64",
    "complex128": "C128",
}
#: The dtypes the dense kernel serves (complex goes through the strided one).
DENSE_TAGS = ("float16", "float32", "float64")

_OPERAND_DEFINES = "\n".join(f"#define L1_{name.upper()} {k}" for k, name in enumerate(OPERANDS))

SOURCE = (
    cuda_constants()
    + f"#define L1_MAXD {MAX_GROUP_DIMS}\n#define L1_NOPS {len(OPERANDS)}\n"
    + _OPERAND_DEFINES
    + r"""

// Passed by value; mirrored field by field by the host's NumPy structured dtype.
struct Layout {
    long long rows, count, lanes, iters, chunks;  // the partition
    long long op, finish, scale;                  // what the pass computes (strided, finish)
    long long nk, nr;                             // kept and reduced dimensions (strided)
    long long kshape[L1_MAXD];
    long long rshape[L1_MAXD];
    long long kstride[L1_NOPS][L1_MAXD];  // element strides of each operand along kept dims
    long long rstride[L1_NOPS][L1_MAXD];  // ... and along reduced dims
    double g_scalar;     // grad_output when it is a number (or absent: 1)
    double scale_count;  // the count a mean's gradient is divided by
};

struct F16 { typedef unsigned short storage; typedef unsigned short real; };
struct F32 { typedef float storage; typedef float real; };
struct F64 { typedef double storage; typedef double real; };
struct C64 { typedef float2 storage; typedef float real; };
struct C128 { typedef double2 storage; typedef double real; };

// ----- exact conversions: cvt, whatever -ftz says ------------------------------------------

__device__ __forceinline__ double l1_widen(unsigned short h) {
    double r; asm("cvt.f64.f16 %0, %1;" : "=d"(r) : "h"(h)); return r;
}
__device__ __forceinline__ double l1_widen(float v) {
    double r; asm("cvt.f64.f32 %0, %1;" : "=d"(r) : "f"(v)); return r;
}
__device__ __forceinline__ double l1_widen(double v) { return v; }

// Rounded to nearest, ties to even, once (a float64 never goes through float32).
__device__ __forceinline__ void l1_narrow(double v, unsigned short& out) {
    asm("cvt.rn.f16.f64 %0, %1;" : "=h"(out) : "d"(v));
}
__device__ __forceinline__ void l1_narrow(double v, float& out) {
    asm("cvt.rn.f32.f64 %0, %1;" : "=f"(out) : "d"(v));
}
__device__ __forceinline__ void l1_narrow(double v, double& out) { out = v; }

__device__ __forceinline__ void l1_split(unsigned short v, double& re, double& im) {
    re = l1_widen(v); im = 0.0;
}
__device__ __forceinline__ void l1_split(float v, double& re, double& im) {
    re = l1_widen(v); im = 0.0;
}
__device__ __forceinline__ void l1_split(double v, double& re, double& im) { re = v; im = 0.0; }
__device__ __forceinline__ void l1_split(float2 v, double& re, double& im) {
    re = l1_widen(v.x); im = l1_widen(v.y);
}
__device__ __forceinline__ void l1_split(double2 v, double& re, double& im) { re = v.x; im = v.y; }

__device__ __forceinline__ void l1_join(double re, double, unsigned short& out) {
    l1_narrow(re, out);
}
__device__ __forceinline__ void l1_join(double re, double, float& out) { l1_narrow(re, out); }
__device__ __forceinline__ void l1_join(double re, double, double& out) { out = re; }
__device__ __forceinline__ void l1_join(double re, double im, float2& out) {
    l1_narrow(re, out.x); l1_narrow(im, out.y);
}
__device__ __forceinline__ void l1_join(double re, double im, double2& out) {
    out.x = re; out.y = im;
}

// ----- 128-bit packs ---------------------------------------------------------------------

template <typename S> struct L1Pack {
    enum { lanes = 16 / sizeof(S) };
    union { uint4 raw; S v[lanes]; };
};

template <typename S>
__device__ __forceinline__ L1Pack<S> l1_load_pack(const S* p, long long index) {
    L1Pack<S> pack;
    pack.raw = __ldg(reinterpret_cast<const uint4*>(p) + index);
    return pack;
}

template <typename S>
__device__ __forceinline__ void l1_store_pack(S* p, long long index, const L1Pack<S>& pack) {
    reinterpret_cast<uint4*>(p)[index] = pack.raw;
}

// ----- double words ----------------------------------------------------------------------

struct l1_dd { double hi, lo; };

__device__ __forceinline__ l1_dd l1_two_sum(double a, double b) {
    const double s = a + b;
    const double bv = s - a;
    l1_dd r; r.hi = s; r.lo = (a - (s - bv)) + (b - bv);
    return r;
}

// (a.hi + a.lo) + (b.hi + b.lo), keeping the rounding error of the high words.
__device__ __forceinline__ l1_dd l1_dd_add(l1_dd a, l1_dd b) {
    l1_dd s = l1_two_sum(a.hi, b.hi);
    s.lo = (a.lo + b.lo) + s.lo;
    return s;
}

// A term added to a thread's sum: compensated for float64, a plain float64 sum otherwise
// (float16 and float32 terms are exact enough in float64 that their errors do not show).
template <bool COMP>
__device__ __forceinline__ void l1_accumulate(l1_dd& a, double hi, double lo) {
    if (COMP) {
        const l1_dd s = l1_two_sum(a.hi, hi);
        a.hi = s.hi; a.lo = a.lo + (s.lo + lo);
    } else {
        a.hi = a.hi + hi;
    }
}

__device__ __forceinline__ double l1_dd_value(l1_dd a) {
    return isfinite(a.hi) ? a.hi + a.lo : a.hi;
}

// Products whose rounded value feeds an exact error term are computed with __dmul_rn: a
// plain product may be contracted into an FMA with a later addition (NVVM and ptxas both
// may do so), which would make that addition exact and count the product's error twice.

// (hi + lo) / (dh + dl), rounded once (as l1backends.numerics.dd_divide).
__device__ __forceinline__ double l1_dd_div(l1_dd a, l1_dd d) {
    const double q = a.hi / d.hi;
    const double p = __dmul_rn(q, d.hi);
    const double pe = fma(q, d.hi, -p);
    const double r = (((a.hi - p) - pe) + a.lo) - q * d.lo;
    const double c = r / d.hi;
    return isfinite(c) ? q + c : q;
}

// |re + i im| of double-word components, as a double word; inf beats NaN as in hypot.
__device__ __forceinline__ l1_dd l1_dd_hypot(l1_dd re, l1_dd im) {
    l1_dd m; m.lo = 0.0;
    const double ar = fabs(re.hi), ai = fabs(im.hi);
    if (isinf(ar) || isinf(ai)) { m.hi = __longlong_as_double(0x7ff0000000000000LL); return m; }
    if (isnan(ar) || isnan(ai)) { m.hi = ar + ai; return m; }
    const double big = fmax(ar, ai);
    if (big == 0.0) { m.hi = 0.0; return m; }
    const int e = ilogb(big);                  // scale by 2**-e: exact, no overflow
    const double rh = scalbn(re.hi, -e), rl = scalbn(re.lo, -e);
    const double ih = scalbn(im.hi, -e), il = scalbn(im.lo, -e);
    const double p1 = __dmul_rn(rh, rh), e1 = fma(rh, rh, -p1);
    const double p2 = __dmul_rn(ih, ih), e2 = fma(ih, ih, -p2);
    const l1_dd s = l1_two_sum(p1, p2);
    const double lo = ((s.lo + e1) + e2) + 2.0 * (rh * rl + ih * il);
    const double root = sqrt(s.hi);
    const double residual = fma(-root, root, s.hi) + lo;
    m.hi = scalbn(root, e);
    m.lo = scalbn(residual / (2.0 * root), e);
    return m;
}

// w * (hi + lo) as a double word (its product error kept when compensated).
template <bool COMP>
__device__ __forceinline__ l1_dd l1_weigh(l1_dd mag, double w) {
    l1_dd t;
    t.hi = __dmul_rn(mag.hi, w);
    t.lo = (COMP && isfinite(t.hi)) ? fma(mag.hi, w, -t.hi) + mag.lo * w : 0.0;
    return t;
}

// ----- one element -------------------------------------------------------------------------

struct l1_elem {
    l1_dd mag;       // |x - y| (the modulus for complex) as a double word
    double dre, dim; // the rounded difference, for the gradient's direction
};

template <bool COMP, bool CPLX>
__device__ __forceinline__ l1_elem l1_difference(double xr, double xi, double yr, double yi) {
    l1_elem r;
    if (COMP) {
        l1_dd re = l1_two_sum(xr, -yr);
        if (!isfinite(re.hi)) re.lo = 0.0;
        r.dre = re.hi;
        if (CPLX) {
            l1_dd im = l1_two_sum(xi, -yi);
            if (!isfinite(im.hi)) im.lo = 0.0;
            r.dim = im.hi;
            r.mag = l1_dd_hypot(re, im);
        } else {
            r.dim = 0.0;
            r.mag.hi = fabs(re.hi);
            r.mag.lo = re.hi < 0.0 ? -re.lo : re.lo;
        }
    } else {
        r.dre = xr - yr;
        r.dim = CPLX ? xi - yi : 0.0;
        r.mag.hi = CPLX ? hypot(r.dre, r.dim) : fabs(r.dre);
        r.mag.lo = 0.0;
    }
    return r;
}

// sign(d), or d / |d| for complex d (NaN where |d| is not finite, 0 at 0).
template <bool CPLX>
__device__ __forceinline__ void l1_direction(const l1_elem& e, double& ure, double& uim) {
    if (CPLX) {
        if (!isfinite(e.mag.hi)) {
            ure = uim = __longlong_as_double(0x7ff8000000000000LL);
        } else if (e.mag.hi == 0.0) {
            ure = 0.0; uim = 0.0;
        } else {
            const double tweak = e.mag.lo / e.mag.hi;
            ure = e.dre / e.mag.hi; ure = ure - ure * tweak;
            uim = e.dim / e.mag.hi; uim = uim - uim * tweak;
        }
    } else {
        const double d = e.dre;
        double unit = d > 0.0 ? 1.0 : -1.0;
        unit = d != 0.0 ? unit : 0.0;
        ure = d == d ? unit : d;
        uim = 0.0;
    }
}

// The gradient's scale from grad_output and the row's count or Σw.
__device__ __forceinline__ double l1_scale(long long kind, double g, double count, double sw) {
    if (kind == L1_SCALE_BY_COUNT) return g / count;
    if (kind == L1_SCALE_BY_WEIGHT_SUM) return g / sw;
    return g;
}

// ----- fixed-order block reduction of two double words (result in thread 0) ---------------

__device__ __forceinline__ l1_dd l1_shfl_down(l1_dd a, int offset) {
    l1_dd r;
    r.hi = __shfl_down_sync(0xffffffffu, a.hi, offset);
    r.lo = __shfl_down_sync(0xffffffffu, a.lo, offset);
    return r;
}

__device__ __forceinline__ void l1_block_reduce(l1_dd& a, l1_dd& b) {
    __shared__ double shared[4][32];
    #pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        a = l1_dd_add(a, l1_shfl_down(a, offset));
        b = l1_dd_add(b, l1_shfl_down(b, offset));
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    if (lane == 0) {
        shared[0][warp] = a.hi; shared[1][warp] = a.lo;
        shared[2][warp] = b.hi; shared[3][warp] = b.lo;
    }
    __syncthreads();
    if (warp == 0) {
        const bool live = lane < warps;
        a.hi = live ? shared[0][lane] : 0.0; a.lo = live ? shared[1][lane] : 0.0;
        b.hi = live ? shared[2][lane] : 0.0; b.lo = live ? shared[3][lane] : 0.0;
        #pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) {
            a = l1_dd_add(a, l1_shfl_down(a, offset));
            b = l1_dd_add(b, l1_shfl_down(b, offset));
        }
    }
    __syncthreads();  // ``shared`` is reused by the next work item
}

// ----- finishing a row ---------------------------------------------------------------------

// a: Σ w·|d| (or Σ w, or the gradient's real part), b: Σ w (or its imaginary part).
template <class Tag>
__device__ __forceinline__ void l1_finish_row(long long op, long long finish, long long row,
                                              const Layout& lay, l1_dd a, l1_dd b,
                                              typename Tag::storage* gx,
                                              typename Tag::real* out, double* words) {
    if (finish == L1_FINISH_NONE) {
        words[row] = a.hi; words[lay.rows + row] = a.lo;
        words[2 * lay.rows + row] = b.hi; words[3 * lay.rows + row] = b.lo;
    } else if (op & L1_OP_WEIGHT_SUM) {
        words[row] = l1_dd_value(a);
    } else if (op & L1_OP_GRAD_SUM) {
        l1_join(l1_dd_value(a), l1_dd_value(b), gx[row]);
    } else if (finish == L1_FINISH_MEAN_BY_COUNT) {
        l1_dd c; c.hi = (double)lay.count; c.lo = 0.0;
        l1_narrow(l1_dd_div(a, c), out[row]);
    } else if (finish == L1_FINISH_MEAN_BY_WEIGHT) {
        l1_narrow(l1_dd_div(a, b), out[row]);
    } else {
        l1_narrow(l1_dd_value(a), out[row]);
    }
}

// Sums the block; thread 0 finishes the row or stores the chunk's sums.
template <class Tag>
__device__ __forceinline__ void l1_close(long long op, long long finish, long long item,
                                         long long row, const Layout& lay, l1_dd a, l1_dd b,
                                         typename Tag::storage* gx, typename Tag::real* out,
                                         double* words, double* partials) {
    l1_block_reduce(a, b);
    if (threadIdx.x != 0) return;
    if (lay.chunks == 1) {
        l1_finish_row<Tag>(op, finish, row, lay, a, b, gx, out, words);
    } else {
        const long long items = lay.rows * lay.chunks;
        partials[item] = a.hi; partials[items + item] = a.lo;
        partials[2 * items + item] = b.hi; partials[3 * items + item] = b.lo;
    }
}

// ----- one element of any pass --------------------------------------------------------------

// Updates the sums and returns the gradient (re, im) and the elementwise loss.
template <class Tag>
__device__ __forceinline__ void l1_visit(long long op, double xr, double xi, double yr, double yi,
                                         double wv, double scale, l1_dd& a, l1_dd& b,
                                         double& gre, double& gim, double& value) {
    constexpr bool COMP = sizeof(typename Tag::real) == 8;
    constexpr bool CPLX = sizeof(typename Tag::storage) != sizeof(typename Tag::real);
    const bool weighted = op & L1_OP_WEIGHT;
    if (op & L1_OP_WEIGHT_SUM) { l1_accumulate<COMP>(a, wv, 0.0); return; }
    const l1_elem e = l1_difference<COMP, CPLX>(xr, xi, yr, yi);
    if (op & (L1_OP_GRAD | L1_OP_GRAD_SUM)) {
        double ure, uim;
        l1_direction<CPLX>(e, ure, uim);
        const double factor = weighted ? scale * wv : scale;
        gre = ure * factor; gim = uim * factor;
    }
    const l1_dd term = weighted ? l1_weigh<COMP>(e.mag, wv) : e.mag;
    if (op & L1_OP_LOSS) {
        l1_accumulate<COMP>(a, term.hi, term.lo);
        if (weighted) l1_accumulate<COMP>(b, wv, 0.0);
    }
    if (op & L1_OP_GRAD_SUM) {
        l1_accumulate<COMP>(a, gre, 0.0);
        l1_accumulate<COMP>(b, gim, 0.0);
    }
    if (op & L1_OP_NONE_OUT) value = l1_dd_value(term);
}

// ----- dense rows ----------------------------------------------------------------------------

template <class Tag, int OPS, int FINISH>
__global__ void __launch_bounds__(256, 5)
l1_dense(const Layout lay,
         const typename Tag::storage* __restrict__ x,
         const typename Tag::storage* __restrict__ y,
         const typename Tag::real* __restrict__ w,
         const typename Tag::real* __restrict__ g,
         const double* __restrict__ sw,
         typename Tag::storage* __restrict__ gx,
         typename Tag::real* __restrict__ none,
         typename Tag::real* __restrict__ out,
         double* __restrict__ words,
         double* __restrict__ partials) {
    typedef typename Tag::storage S;
    constexpr int L = L1Pack<S>::lanes;
    constexpr bool WEIGHTED = OPS & L1_OP_WEIGHT;
    constexpr bool GRAD = OPS & L1_OP_GRAD;
    constexpr bool NONE_OUT = OPS & L1_OP_NONE_OUT;
    constexpr bool WEIGHT_SUM = OPS & L1_OP_WEIGHT_SUM;
    constexpr bool G_ELEMENTS = (OPS & L1_OP_ELEMENTWISE) && (OPS & L1_OP_G_ARRAY);
    constexpr bool SUMS = OPS & (L1_OP_LOSS | L1_OP_WEIGHT_SUM);
    constexpr bool PICK = GRAD && !WEIGHTED && !G_ELEMENTS;
    const long long threads = blockDim.x;
    const long long full = lay.count / L;
    const long long stride = threads * lay.iters;
    for (long long item = blockIdx.x; item < lay.rows * lay.chunks; item += gridDim.x) {
        const long long row = item / lay.chunks;
        const long long start = (item - row * lay.chunks) * stride;
        double scale = lay.g_scalar;
        if (GRAD && !(OPS & L1_OP_ELEMENTWISE)) {
            const double gv = (lay.op & L1_OP_G_ARRAY) ? l1_widen(g[row * lay.kstride[L1_G][0]])
                                                      : lay.g_scalar;
            const double swv = lay.scale == L1_SCALE_BY_WEIGHT_SUM ? sw[row] : 1.0;
            scale = l1_scale(lay.scale, gv, lay.scale_count, swv);
        }
        S positive, negative, tie;  // unweighted: a row's gradient takes these three values
        l1_join(scale, 0.0, positive); l1_join(-scale, 0.0, negative);
        l1_join(0.0 * scale, 0.0, tie);
        l1_dd a, b;
        a.hi = a.lo = b.hi = b.lo = 0.0;
        // This thread's vectors: start + its index, then every ``threads``-th, in the chunk.
        long long v = row * full + start + threadIdx.x;
        const long long end = row * full + (full < start + stride ? full : start + stride);
        for (; v < end; v += threads) {
            L1Pack<S> xs, ys, ws, gs, grads, values;
            if (!WEIGHT_SUM) { xs = l1_load_pack<S>(x, v); ys = l1_load_pack<S>(y, v); }
            if (WEIGHTED) ws = l1_load_pack<S>(w, v);
            if (G_ELEMENTS) gs = l1_load_pack<S>(g, v);
            #pragma unroll
            for (int lane = 0; lane < L; ++lane) {
                const double wv = WEIGHTED ? l1_widen(ws.v[lane]) : 1.0;
                const double xv = WEIGHT_SUM ? 0.0 : l1_widen(xs.v[lane]);
                const double yv = WEIGHT_SUM ? 0.0 : l1_widen(ys.v[lane]);
                double gre = 0.0, gim = 0.0, value = 0.0;
                const double lane_scale = G_ELEMENTS ? l1_widen(gs.v[lane]) : scale;
                l1_visit<Tag>(OPS, xv, 0.0, yv, 0.0, wv, lane_scale, a, b, gre, gim, value);
                if (PICK) {
                    const double d = xv - yv;
                    S picked = d > 0.0 ? positive : negative;
                    picked = d != 0.0 ? picked : tie;
                    if (d == d) grads.v[lane] = picked; else l1_join(d, 0.0, grads.v[lane]);
                } else if (GRAD) {
                    l1_join(gre, gim, grads.v[lane]);
                }
                if (NONE_OUT) l1_join(value, 0.0, values.v[lane]);
            }
            if (GRAD) l1_store_pack<S>(gx, v, grads);
            if (NONE_OUT) l1_store_pack<S>(none, v, values);
        }
        if (v == (row + 1) * full && full < start + stride) {  // the last, partial vector
            #pragma unroll
            for (int lane = 0; lane < L - 1; ++lane) {
                const long long e = row * lay.count + full * L + lane;
                if (full * L + lane >= lay.count) break;
                const double wv = WEIGHTED ? l1_widen(w[e]) : 1.0;
                const double xv = WEIGHT_SUM ? 0.0 : l1_widen(x[e]);
                const double yv = WEIGHT_SUM ? 0.0 : l1_widen(y[e]);
                double gre = 0.0, gim = 0.0, value = 0.0;
                const double lane_scale = G_ELEMENTS ? l1_widen(g[e]) : scale;
                l1_visit<Tag>(OPS, xv, 0.0, yv, 0.0, wv, lane_scale, a, b, gre, gim, value);
                if (GRAD) l1_join(gre, gim, gx[e]);
                if (NONE_OUT) l1_join(value, 0.0, none[e]);
            }
        }
        if (SUMS) l1_close<Tag>(OPS, FINISH, item, row, lay, a, b, gx, out, words, partials);
    }
}

// ----- any layout ----------------------------------------------------------------------------

// Offsets of every operand for a C-order index over ``n`` dims of ``shape``.
__device__ __forceinline__ void l1_offsets(long long index, int n, const long long* shape,
                                           const long long (*stride)[L1_MAXD],
                                           long long* offset) {
    #pragma unroll
    for (int k = 0; k < L1_NOPS; ++k) offset[k] = 0;
    #pragma unroll
    for (int d = L1_MAXD - 1; d >= 0; --d) {
        if (d < n) {
            const long long c = index % shape[d];
            index /= shape[d];
            #pragma unroll
            for (int k = 0; k < L1_NOPS; ++k) offset[k] += c * stride[k][d];
        }
    }
}

template <class Tag>
__global__ void
l1_strided(const Layout lay,
           const typename Tag::storage* __restrict__ x,
           const typename Tag::storage* __restrict__ y,
           const typename Tag::real* __restrict__ w,
           const typename Tag::real* __restrict__ g,
           const double* __restrict__ sw,
           typename Tag::storage* __restrict__ gx,
           typename Tag::real* __restrict__ none,
           typename Tag::real* __restrict__ out,
           double* __restrict__ words,
           double* __restrict__ partials) {
    const long long op = lay.op;
    const bool sums = op & (L1_OP_LOSS | L1_OP_WEIGHT_SUM | L1_OP_GRAD_SUM);
    const long long threads = blockDim.x;
    const long long vectors = (lay.count + lay.lanes - 1) / lay.lanes;
    const long long stride = threads * lay.iters;
    for (long long item = blockIdx.x; item < lay.rows * lay.chunks; item += gridDim.x) {
        const long long row = item / lay.chunks;
        const long long first = (item - row * lay.chunks) * stride + threadIdx.x;
        long long base[L1_NOPS];
        l1_offsets(row, (int)lay.nk, lay.kshape, lay.kstride, base);
        l1_dd a, b;
        a.hi = a.lo = b.hi = b.lo = 0.0;
        for (long long k = 0; k < lay.iters; ++k) {
            const long long v = first + k * threads;
            if (v >= vectors) break;
            const long long stop = v * lay.lanes + lay.lanes < lay.count ? v * lay.lanes + lay.lanes
                                                                         : lay.count;
            for (long long e = v * lay.lanes; e < stop; ++e) {
                long long off[L1_NOPS];
                l1_offsets(e, (int)lay.nr, lay.rshape, lay.rstride, off);
                #pragma unroll
                for (int n = 0; n < L1_NOPS; ++n) off[n] += base[n];
                const double wv = (op & L1_OP_WEIGHT) ? l1_widen(w[off[L1_W]]) : 1.0;
                double xr = 0.0, xi = 0.0, yr = 0.0, yi = 0.0;
                if (!(op & L1_OP_WEIGHT_SUM)) {
                    l1_split(x[off[L1_X]], xr, xi);
                    l1_split(y[off[L1_Y]], yr, yi);
                }
                const double gv = (op & L1_OP_G_ARRAY) ? l1_widen(g[off[L1_G]]) : lay.g_scalar;
                const double swv = lay.scale == L1_SCALE_BY_WEIGHT_SUM ? sw[off[L1_SW]] : 1.0;
                const double scale = l1_scale(lay.scale, gv, lay.scale_count, swv);
                double gre = 0.0, gim = 0.0, value = 0.0;
                l1_visit<Tag>(op, xr, xi, yr, yi, wv, scale, a, b, gre, gim, value);
                if (op & L1_OP_GRAD) l1_join(gre, gim, gx[off[L1_GRAD]]);
                if (op & L1_OP_NONE_OUT) l1_join(value, 0.0, none[off[L1_NONE]]);
            }
        }
        if (sums) l1_close<Tag>(op, lay.finish, item, row, lay, a, b, gx, out, words, partials);
    }
}

// ----- chunk sums ----------------------------------------------------------------------------

template <class Tag>
__global__ void
l1_finish(const Layout lay, const double* __restrict__ partials,
          typename Tag::storage* __restrict__ gx, typename Tag::real* __restrict__ out,
          double* __restrict__ words) {
    const long long items = lay.rows * lay.chunks;
    for (long long row = blockIdx.x; row < lay.rows; row += gridDim.x) {
        l1_dd a, b;
        a.hi = a.lo = b.hi = b.lo = 0.0;
        for (long long c = row * lay.chunks + threadIdx.x; c < (row + 1) * lay.chunks;
             c += blockDim.x) {
            l1_dd pa, pb;
            pa.hi = partials[c]; pa.lo = partials[items + c];
            pb.hi = partials[2 * items + c]; pb.lo = partials[3 * items + c];
            a = l1_dd_add(a, pa);
            b = l1_dd_add(b, pb);
        }
        l1_block_reduce(a, b);
        if (threadIdx.x == 0) {
            l1_finish_row<Tag>(lay.op, lay.finish, row, lay, a, b, gx, out, words);
        }
    }
}
"""
)


def specialization(kernel: str, dtype: str, ops: int = 0, finish: int = 0) -> str:
    """The C++ name expression of one kernel specialization.

    Parameters
    ----------
    kernel : str
        "l1_dense", "l1_strided" or "l1_finish".
    dtype : str
        The compute dtype ("float32", "complex64", ...).
    ops, finish : int
        The dense kernel's :class:`Op` bits and :class:`~l1backends.semantics.Finish` code.

    Returns
    -------
    str
        Such as ``"l1_dense<F32, 1, 2>"``.
    """
    tag = TAGS[dtype]
    if kernel == "l1_dense":
        return f"l1_dense<{tag}, {int(ops)}, {int(finish)}>"
    return f"{kernel}<{tag}>"


def dense_variants() -> tuple[tuple[Op, int], ...]:
    """Every (ops, finish) the dense kernel is launched with (see ``_plan.dense_key``)."""
    from ...semantics import Finish

    variants = [(Op.WEIGHT_SUM | Op.WEIGHT, Finish.SUM)]
    for weight in (Op(0), Op.WEIGHT):
        mean = Finish.MEAN_BY_WEIGHT if weight else Finish.MEAN_BY_COUNT
        for finish in (Finish.SUM, mean):
            variants += [(Op.LOSS | weight, finish), (Op.LOSS | Op.GRAD | weight, finish)]
        variants += [(Op.LOSS | weight, Finish.NONE), (Op.GRAD | weight, Finish.NONE)]
        elementwise = Op.ELEMENTWISE | weight
        variants.append((elementwise | Op.NONE_OUT, Finish.NONE))
        for g in (Op(0), Op.G_ARRAY):
            variants += [
                (elementwise | Op.GRAD | g, Finish.NONE),
                (elementwise | Op.GRAD | Op.NONE_OUT | g, Finish.NONE),
            ]
    return tuple((ops, int(finish)) for ops, finish in variants)


def name_expressions() -> tuple[str, ...]:
    """Every specialization the backend can launch, in a fixed order."""
    names = []
    for dtype in TAGS:
        if dtype in DENSE_TAGS:
            names += [specialization("l1_dense", dtype, ops, fin) for ops, fin in dense_variants()]
        names += [specialization("l1_strided", dtype), specialization("l1_finish", dtype)]
    return tuple(names)
