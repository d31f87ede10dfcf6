"""The CUDA C++ source of the CuPy backend's kernels, and the names of its specializations.

The source needs no header at all: float16 and float32 are converted on raw bits
with exact, correctly rounded conversions written here (so no ``cuda_fp16.h`` is
required, float64 results are rounded once, never through float32, and CuPy's
``-ftz=true`` cannot flush float32 subnormals), and complex numbers are plain
``float2``/``double2`` pairs.  The same text is compiled by
CuPy's ``RawModule`` at run time and by NVRTC in the tests, for every
specialization listed by :func:`name_expressions`.

Layout of the kernels
---------------------
``l1_rows<Tag, VEC>``
    One reduction pass over ``rows`` independent rows of ``count`` elements
    (a row is one output element; its elements are the reduced axes).  Block
    ``(chunk, r)`` accumulates a double word over the chunk's share of row ``r``
    in a fixed order, reduces the block in a fixed tree, then either finishes
    the row (one chunk per row) or writes its partial sums for ``l1_finish``.
    Ops: the loss (optionally writing the fused gradient), the weight sum, or
    the gradient summed back over broadcast axes.
``l1_finish<Tag>``
    One block per row, combining the row's chunk partials in a fixed order.
``l1_elementwise<Tag, VEC>``
    reduction="none": the weighted loss and the fused gradient, per element.

``VEC`` is 0 for arbitrary strides (N-d index arithmetic), 1 for contiguous
rows read one element at a time, and the number of lanes of one 128-bit load
for contiguous, 16-byte aligned rows.
"""

from __future__ import annotations

__all__ = [
    "COMPILE_OPTIONS",
    "FLAG_DIVISOR_ARRAY",
    "FLAG_G_ARRAY",
    "FLAG_MEAN",
    "FLAG_RAW",
    "FLAG_WEIGHT",
    "FLAG_WRITE_GRAD",
    "FLAG_WRITE_LOSS",
    "MAX_DIMS",
    "OPERANDS",
    "OP_GRADSUM",
    "OP_LOSS",
    "OP_WSUM",
    "SOURCE",
    "TAGS",
    "name_expressions",
    "specialization",
]

# NVRTC options for the source; CuPy appends its own "-ftz=true" after them (last one wins).
COMPILE_OPTIONS = ("-std=c++17",)

# Kept in step with the #defines below (tests compare them).
MAX_DIMS = 8
OPERANDS = ("x", "y", "w", "g", "d", "gx")
OP_LOSS, OP_GRADSUM, OP_WSUM = 0, 1, 2
FLAG_WEIGHT = 1
FLAG_G_ARRAY = 2
FLAG_WRITE_GRAD = 4
FLAG_WRITE_LOSS = 8
FLAG_MEAN = 16
FLAG_DIVISOR_ARRAY = 32
FLAG_RAW = 64

# The kernel tag of each compute dtype, and the lanes of its 128-bit vector path.
TAGS = {
    "float16": ("F16", 8),
    "float32": ("F32", 4),
    "float64": ("F64", 2),
    "complex64": ("C64", 2),
    "complex128": ("C128", 1),
}

SOURCE = r"""
#define L1_MAXD 8
#define L1_NOPS 6
#define L1_X 0
#define L1_Y 1
#define L1_W 2
#define L1_G 3
#define L1_D 4
#define L1_GX 5

#define L1_OP_LOSS 0
#define L1_OP_GRADSUM 1
#define L1_OP_WSUM 2

#define L1_WEIGHT 1
#define L1_G_ARRAY 2
#define L1_WRITE_GRAD 4
#define L1_WRITE_LOSS 8
#define L1_MEAN 16
#define L1_DIVISOR_ARRAY 32
#define L1_RAW 64  // the loss op writes its unrounded double words (for Dask)

// Passed by value; mirrored field by field by the host's NumPy structured dtype.
struct Geometry {
    long long op, flags, rows, count, chunks, nk, nr, reserved;
    long long kshape[L1_MAXD];
    long long rshape[L1_MAXD];
    long long kstride[L1_NOPS][L1_MAXD];  // element strides of each operand along kept dims
    long long rstride[L1_NOPS][L1_MAXD];  // ... and along reduced dims
    double g_scalar;     // grad_output when it is a Python number (or absent: 1)
    double mean_count;   // divisor of an unweighted mean
};

struct F16 { typedef unsigned short storage; typedef unsigned short real; };
struct F32 { typedef float storage; typedef float real; };
struct F64 { typedef double storage; typedef double real; };
struct C64 { typedef float2 storage; typedef float real; };
struct C128 { typedef double2 storage; typedef double real; };

// ----- exact float16 conversions, on raw bits ---------------------------------------------

__device__ __forceinline__ double l1_half_to_double(unsigned short h) {
    const int exponent = (h >> 10) & 0x1f;
    const int mantissa = h & 0x3ff;
    double magnitude;
    if (exponent == 0x1f) {
        magnitude = mantissa ? __longlong_as_double(0x7ff8000000000000LL)
                             : __longlong_as_double(0x7ff0000000000000LL);
    } else if (exponent == 0) {
        magnitude = (double)mantissa * 5.9604644775390625e-08;  // 2**-24, exact
    } else {
        magnitude = __longlong_as_double(
            ((long long)(exponent - 15 + 1023) << 52) | ((long long)mantissa << 42));
    }
    return (h & 0x8000) ? -magnitude : magnitude;
}

// Rounds to nearest, ties to even, once (no detour through float32).
__device__ __forceinline__ unsigned short l1_double_to_half(double v) {
    const unsigned short sign = signbit(v) ? 0x8000 : 0;
    const double a = fabs(v);
    if (isnan(a)) return sign | 0x7e00;
    if (a >= 65520.0) return sign | 0x7c00;  // 65520 is the midpoint above 65504: ties go up
    if (a < 6.103515625e-05) {                // below 2**-14: subnormal, step 2**-24
        return sign | (unsigned short)rint(a * 16777216.0);
    }
    const int e = ilogb(a);                   // -14 .. 15
    const double m = rint(scalbn(a, 10 - e)); // 1024 .. 2048, exact scaling
    return sign | (unsigned short)(((e + 15) << 10) + ((int)m - 1024));
}

// ----- exact float32 conversions, on raw bits ---------------------------------------------
// CuPy compiles every kernel with -ftz=true (appended after the caller's options), which
// turns float <-> double casts into flushing ones: float32 subnormal inputs would read as 0
// and subnormal results would be written as 0.  These conversions use no float32 instruction.

__device__ __forceinline__ double l1_float_to_double(float v) {
    const unsigned int bits = __float_as_uint(v);
    const unsigned int exponent = (bits >> 23) & 0xff;
    const unsigned int mantissa = bits & 0x7fffff;
    double magnitude;
    if (exponent == 0xff) {
        magnitude = mantissa ? __longlong_as_double(0x7ff8000000000000LL)
                             : __longlong_as_double(0x7ff0000000000000LL);
    } else if (exponent == 0) {
        magnitude = (double)mantissa * 1.401298464324817e-45;  // 2**-149, exact
    } else {
        magnitude = __longlong_as_double(
            ((long long)(exponent - 127 + 1023) << 52) | ((long long)mantissa << 29));
    }
    return (bits >> 31) ? -magnitude : magnitude;
}

// Rounds to nearest, ties to even, subnormals included.
__device__ __forceinline__ float l1_double_to_float(double v) {
    const unsigned int sign = signbit(v) ? 0x80000000u : 0u;
    const double a = fabs(v);
    if (isnan(a)) return __uint_as_float(sign | 0x7fc00000u);
    if (a < 1.1754943508222875e-38) {  // below 2**-126: subnormal, step 2**-149
        return __uint_as_float(sign | (unsigned int)rint(a * 7.1362384635297994e+44));
    }
    // Drop 29 of the 52 mantissa bits with round-to-nearest-even; a carry moves into the
    // exponent, and past the largest float the result is the infinity's bit pattern.
    const unsigned long long bits = (unsigned long long)__double_as_longlong(a);
    const unsigned long long rounded = (bits + 0x0fffffffULL + ((bits >> 29) & 1)) >> 29;
    const unsigned long long single = rounded - (896ULL << 23);  // exponent bias 1023 -> 127
    return __uint_as_float(sign | (unsigned int)(single < 0x7f800000ULL ? single : 0x7f800000ULL));
}

// ----- loads and stores of one element -----------------------------------------------------

__device__ __forceinline__ void l1_split(unsigned short v, double& re, double& im) {
    re = l1_half_to_double(v); im = 0.0;
}
__device__ __forceinline__ void l1_split(float v, double& re, double& im) {
    re = l1_float_to_double(v); im = 0.0;
}
__device__ __forceinline__ void l1_split(double v, double& re, double& im) { re = v; im = 0.0; }
__device__ __forceinline__ void l1_split(float2 v, double& re, double& im) {
    re = l1_float_to_double(v.x); im = l1_float_to_double(v.y);
}
__device__ __forceinline__ void l1_split(double2 v, double& re, double& im) { re = v.x; im = v.y; }

__device__ __forceinline__ double l1_real(unsigned short v) { return l1_half_to_double(v); }
__device__ __forceinline__ double l1_real(float v) { return l1_float_to_double(v); }
__device__ __forceinline__ double l1_real(double v) { return v; }

__device__ __forceinline__ void l1_join(double re, double, unsigned short& out) {
    out = l1_double_to_half(re);
}
__device__ __forceinline__ void l1_join(double re, double, float& out) {
    out = l1_double_to_float(re);
}
__device__ __forceinline__ void l1_join(double re, double, double& out) { out = re; }
__device__ __forceinline__ void l1_join(double re, double im, float2& out) {
    out.x = l1_double_to_float(re); out.y = l1_double_to_float(im);
}
__device__ __forceinline__ void l1_join(double re, double im, double2& out) {
    out.x = re; out.y = im;
}

// ----- 128-bit (or narrower) packs ---------------------------------------------------------

template <int BYTES> struct L1Raw;
template <> struct L1Raw<16> { typedef uint4 type; };
template <> struct L1Raw<8> { typedef uint2 type; };
template <> struct L1Raw<4> { typedef unsigned int type; };
template <> struct L1Raw<2> { typedef unsigned short type; };

template <typename S, int N> union L1Pack {
    typename L1Raw<sizeof(S) * N>::type raw;
    S v[N];
};

template <typename S, int N>
__device__ __forceinline__ L1Pack<S, N> l1_load_pack(const S* p, long long index) {
    typedef typename L1Raw<sizeof(S) * N>::type raw_t;
    L1Pack<S, N> pack;
    pack.raw = __ldg(reinterpret_cast<const raw_t*>(p) + index);
    return pack;
}

template <typename S, int N>
__device__ __forceinline__ void l1_store_pack(S* p, long long index, const L1Pack<S, N>& pack) {
    typedef typename L1Raw<sizeof(S) * N>::type raw_t;
    reinterpret_cast<raw_t*>(p)[index] = pack.raw;
}

// ----- double-word arithmetic --------------------------------------------------------------

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

// ----- one element -------------------------------------------------------------------------

struct l1_elem {
    l1_dd mag;       // |x - y| (modulus for complex) as a double word
    double dre, dim; // the rounded difference, for the gradient's direction
};

__device__ __forceinline__ l1_elem l1_difference(double xr, double xi, double yr, double yi,
                                                 bool is_complex) {
    l1_elem r;
    l1_dd re = l1_two_sum(xr, -yr);
    if (!isfinite(re.hi)) re.lo = 0.0;
    r.dre = re.hi;
    if (is_complex) {
        l1_dd im = l1_two_sum(xi, -yi);
        if (!isfinite(im.hi)) im.lo = 0.0;
        r.dim = im.hi;
        r.mag = l1_dd_hypot(re, im);
    } else {
        r.dim = 0.0;
        r.mag.hi = fabs(re.hi);
        r.mag.lo = re.hi < 0.0 ? -re.lo : re.lo;
    }
    return r;
}

// w * |d| as a double word (w exact in double).
__device__ __forceinline__ l1_dd l1_weigh(l1_dd mag, double w) {
    l1_dd t;
    t.hi = __dmul_rn(mag.hi, w);
    t.lo = isfinite(t.hi) ? fma(mag.hi, w, -t.hi) + mag.lo * w : 0.0;
    return t;
}

// The subgradient sign(d) * scale (complex: d/|d| * scale), as (re, im) in double.
__device__ __forceinline__ void l1_direction(const l1_elem& e, double scale, bool is_complex,
                                             double& gre, double& gim) {
    if (is_complex) {
        if (!isfinite(e.mag.hi)) {
            gre = gim = __longlong_as_double(0x7ff8000000000000LL);
        } else if (e.mag.hi == 0.0) {
            gre = 0.0 * scale; gim = 0.0 * scale;
        } else {
            const double tweak = e.mag.lo / e.mag.hi;
            double ur = e.dre / e.mag.hi; ur -= ur * tweak;
            double ui = e.dim / e.mag.hi; ui -= ui * tweak;
            gre = ur * scale; gim = ui * scale;
        }
    } else {
        const double d = e.dre;
        const double sign = d > 0.0 ? 1.0 : (d < 0.0 ? -1.0 : (d == 0.0 ? 0.0 : d));
        gre = sign * scale; gim = 0.0;
    }
}

__device__ __forceinline__ double l1_scale(const Geometry& geo, double g, double w,
                                           double divisor) {
    double s = g;
    if (geo.flags & L1_WEIGHT) s = s * w;
    if (geo.flags & L1_MEAN) s = s / ((geo.flags & L1_DIVISOR_ARRAY) ? divisor : geo.mean_count);
    return s;
}

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
    const int warps = (blockDim.x + 31) >> 5;
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
    __syncthreads();  // ``shared`` is reused by the next row
}

// ----- finishing a row ---------------------------------------------------------------------

template <class Tag>
__device__ __forceinline__ void l1_finish_row(const Geometry& geo, long long row, l1_dd a, l1_dd b,
                                              typename Tag::storage* gx,
                                              typename Tag::real* loss, double* divisor) {
    if (geo.op == L1_OP_LOSS && (geo.flags & L1_RAW)) {
        double* p = divisor + 4 * row;
        p[0] = a.hi; p[1] = a.lo; p[2] = b.hi; p[3] = b.lo;
    } else if (geo.op == L1_OP_LOSS) {
        double v;
        if (!(geo.flags & L1_MEAN)) {
            v = l1_dd_value(a);
        } else if (geo.flags & L1_WEIGHT) {
            v = l1_dd_div(a, b);
        } else {
            l1_dd c; c.hi = geo.mean_count; c.lo = 0.0;
            v = l1_dd_div(a, c);
        }
        l1_join(v, 0.0, loss[row]);
    } else if (geo.op == L1_OP_WSUM) {
        divisor[row] = l1_dd_value(a);
    } else {
        l1_join(l1_dd_value(a), l1_dd_value(b), gx[row]);
    }
}

// ----- the reduction pass ------------------------------------------------------------------

template <class Tag, int VEC>
__device__ __forceinline__ void l1_visit(const Geometry& geo, const long long* off, bool is_complex,
                                         typename Tag::storage x, typename Tag::storage y,
                                         const typename Tag::real* __restrict__ w,
                                         const typename Tag::real* __restrict__ g,
                                         const double* __restrict__ dv,
                                         typename Tag::storage* __restrict__ gx,
                                         l1_dd& a, l1_dd& b) {
    const bool weighted = geo.flags & L1_WEIGHT;
    const double wv = weighted ? l1_real(w[off[L1_W]]) : 1.0;
    if (geo.op == L1_OP_WSUM) {
        l1_dd t; t.hi = wv; t.lo = 0.0;
        a = l1_dd_add(a, t);
        return;
    }
    double xr, xi, yr, yi;
    l1_split(x, xr, xi);
    l1_split(y, yr, yi);
    const l1_elem e = l1_difference(xr, xi, yr, yi, is_complex);
    const bool need_grad = geo.op == L1_OP_GRADSUM || (geo.flags & L1_WRITE_GRAD);
    if (geo.op == L1_OP_LOSS) {
        a = l1_dd_add(a, weighted ? l1_weigh(e.mag, wv) : e.mag);
        if (weighted) { l1_dd t; t.hi = wv; t.lo = 0.0; b = l1_dd_add(b, t); }
    }
    if (need_grad) {
        const double gv = (geo.flags & L1_G_ARRAY) ? l1_real(g[off[L1_G]]) : geo.g_scalar;
        const double divisor = (geo.flags & L1_DIVISOR_ARRAY) ? dv[off[L1_D]] : 1.0;
        double gre, gim;
        l1_direction(e, l1_scale(geo, gv, wv, divisor), is_complex, gre, gim);
        if (geo.op == L1_OP_GRADSUM) {
            l1_dd t; t.hi = gre; t.lo = 0.0; a = l1_dd_add(a, t);
            t.hi = gim; b = l1_dd_add(b, t);
        } else {
            l1_join(gre, gim, gx[off[L1_GX]]);
        }
    }
}

template <class Tag, int VEC>
__global__ void l1_rows(const Geometry geo,
                        const typename Tag::storage* __restrict__ x,
                        const typename Tag::storage* __restrict__ y,
                        const typename Tag::real* __restrict__ w,
                        const typename Tag::real* __restrict__ g,
                        const double* __restrict__ dv,
                        typename Tag::storage* __restrict__ gx,
                        typename Tag::real* __restrict__ loss,
                        double* __restrict__ divisor,
                        double* __restrict__ partials) {
    typedef typename Tag::storage S;
    typedef typename Tag::real R;
    const bool is_complex = sizeof(S) != sizeof(R);
    const long long threads = blockDim.x;
    const long long start = (long long)blockIdx.x * threads + threadIdx.x;
    const long long step = geo.chunks * threads;
    const bool need_xy = geo.op != L1_OP_WSUM;
    const bool weighted = geo.flags & L1_WEIGHT;
    const bool write_grad = geo.op == L1_OP_LOSS && (geo.flags & L1_WRITE_GRAD);
    for (long long row = blockIdx.y; row < geo.rows; row += gridDim.y) {
        long long base[L1_NOPS];
        l1_offsets(row, (int)geo.nk, geo.kshape, geo.kstride, base);
        l1_dd a, b;
        a.hi = a.lo = b.hi = b.lo = 0.0;
        if (VEC == 0) {
            for (long long r = start; r < geo.count; r += step) {
                long long off[L1_NOPS];
                l1_offsets(r, (int)geo.nr, geo.rshape, geo.rstride, off);
                #pragma unroll
                for (int k = 0; k < L1_NOPS; ++k) off[k] += base[k];
                l1_visit<Tag, VEC>(geo, off, is_complex, need_xy ? x[off[L1_X]] : S(),
                                   need_xy ? y[off[L1_Y]] : S(), w, g, dv, gx, a, b);
            }
        } else {
            // Contiguous rows: element r of the row is at base + r for x, y, w and gx, and g and
            // d are per row.  The host guarantees 16-byte alignment of every row when VEC > 1.
            const int lanes = VEC > 0 ? VEC : 1;
            const long long vectors = geo.count / lanes;
            for (long long v = start; v < vectors; v += step) {
                const long long first = base[L1_X] + v * lanes;
                L1Pack<S, lanes> xs, ys, gs;
                L1Pack<R, lanes> ws;
                if (need_xy) {
                    xs = l1_load_pack<S, lanes>(x, first / lanes);
                    ys = l1_load_pack<S, lanes>(y, first / lanes);
                }
                if (weighted) ws = l1_load_pack<R, lanes>(w, first / lanes);
                #pragma unroll
                for (int lane = 0; lane < lanes; ++lane) {
                    long long off[L1_NOPS];
                    off[L1_X] = off[L1_Y] = first + lane;
                    off[L1_W] = off[L1_GX] = lane;  // into the local packs
                    off[L1_G] = base[L1_G];
                    off[L1_D] = base[L1_D];
                    l1_visit<Tag, VEC>(geo, off, is_complex, xs.v[lane], ys.v[lane], ws.v, g, dv,
                                       gs.v, a, b);
                }
                if (write_grad) l1_store_pack<S, lanes>(gx, first / lanes, gs);
            }
            for (long long r = vectors * lanes + start; r < geo.count; r += step) {
                long long off[L1_NOPS];
                off[L1_X] = off[L1_Y] = off[L1_W] = off[L1_GX] = base[L1_X] + r;
                off[L1_G] = base[L1_G];
                off[L1_D] = base[L1_D];
                l1_visit<Tag, VEC>(geo, off, is_complex, need_xy ? x[off[L1_X]] : S(),
                                   need_xy ? y[off[L1_Y]] : S(), w, g, dv, gx, a, b);
            }
        }
        if (geo.op == L1_OP_LOSS && !(geo.flags & L1_WRITE_LOSS)) continue;
        l1_block_reduce(a, b);
        if (threadIdx.x == 0) {
            if (geo.chunks == 1) {
                l1_finish_row<Tag>(geo, row, a, b, gx, loss, divisor);
            } else {
                double* p = partials + 4 * (row * geo.chunks + blockIdx.x);
                p[0] = a.hi; p[1] = a.lo; p[2] = b.hi; p[3] = b.lo;
            }
        }
    }
}

// One block per row: the row's chunk partial sums, combined in a fixed order.
template <class Tag>
__global__ void l1_finish(const Geometry geo, const double* __restrict__ partials,
                          typename Tag::storage* __restrict__ gx,
                          typename Tag::real* __restrict__ loss,
                          double* __restrict__ divisor) {
    for (long long row = blockIdx.x; row < geo.rows; row += gridDim.x) {
        l1_dd a, b;
        a.hi = a.lo = b.hi = b.lo = 0.0;
        const double* p = partials + 4 * row * geo.chunks;
        for (long long c = threadIdx.x; c < geo.chunks; c += blockDim.x) {
            l1_dd pa, pb;
            pa.hi = p[4 * c]; pa.lo = p[4 * c + 1];
            pb.hi = p[4 * c + 2]; pb.lo = p[4 * c + 3];
            a = l1_dd_add(a, pa);
            b = l1_dd_add(b, pb);
        }
        l1_block_reduce(a, b);
        if (threadIdx.x == 0) l1_finish_row<Tag>(geo, row, a, b, gx, loss, divisor);
    }
}

// ----- reduction="none" --------------------------------------------------------------------

template <class Tag>
__device__ __forceinline__ void l1_pointwise(const Geometry& geo, bool is_complex,
                                             typename Tag::storage x, typename Tag::storage y,
                                             double wv, double gv,
                                             typename Tag::real& loss,
                                             typename Tag::storage& grad) {
    double xr, xi, yr, yi;
    l1_split(x, xr, xi);
    l1_split(y, yr, yi);
    const l1_elem e = l1_difference(xr, xi, yr, yi, is_complex);
    if (geo.flags & L1_WRITE_LOSS) {
        const l1_dd t = (geo.flags & L1_WEIGHT) ? l1_weigh(e.mag, wv) : e.mag;
        l1_join(l1_dd_value(t), 0.0, loss);
    }
    if (geo.flags & L1_WRITE_GRAD) {
        double gre, gim;
        l1_direction(e, l1_scale(geo, gv, wv, 1.0), is_complex, gre, gim);
        l1_join(gre, gim, grad);
    }
}

template <class Tag, int VEC>
__global__ void l1_elementwise(const Geometry geo,
                               const typename Tag::storage* __restrict__ x,
                               const typename Tag::storage* __restrict__ y,
                               const typename Tag::real* __restrict__ w,
                               const typename Tag::real* __restrict__ g,
                               typename Tag::storage* __restrict__ gx,
                               typename Tag::real* __restrict__ loss) {
    typedef typename Tag::storage S;
    typedef typename Tag::real R;
    const bool is_complex = sizeof(S) != sizeof(R);
    const bool weighted = geo.flags & L1_WEIGHT;
    const bool g_array = geo.flags & L1_G_ARRAY;
    const long long start = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long step = (long long)gridDim.x * blockDim.x;
    if (VEC == 0) {
        for (long long i = start; i < geo.rows; i += step) {
            long long off[L1_NOPS];
            l1_offsets(i, (int)geo.nk, geo.kshape, geo.kstride, off);
            const double wv = weighted ? l1_real(w[off[L1_W]]) : 1.0;
            const double gv = g_array ? l1_real(g[off[L1_G]]) : geo.g_scalar;
            S grad;
            R value;
            l1_pointwise<Tag>(geo, is_complex, x[off[L1_X]], y[off[L1_Y]], wv, gv, value, grad);
            if (geo.flags & L1_WRITE_LOSS) loss[i] = value;
            if (geo.flags & L1_WRITE_GRAD) gx[i] = grad;
        }
    } else {
        // Contiguous and aligned: x, y, w, loss and gx are dense; g is dense or a scalar.
        const int lanes = VEC > 0 ? VEC : 1;
        const long long vectors = geo.rows / lanes;
        const long long g_step = geo.kstride[L1_G][0];
        for (long long v = start; v < vectors; v += step) {
            const L1Pack<S, lanes> xs = l1_load_pack<S, lanes>(x, v);
            const L1Pack<S, lanes> ys = l1_load_pack<S, lanes>(y, v);
            L1Pack<R, lanes> ws;
            if (weighted) ws = l1_load_pack<R, lanes>(w, v);
            L1Pack<S, lanes> gs;
            L1Pack<R, lanes> values;
            #pragma unroll
            for (int lane = 0; lane < lanes; ++lane) {
                const long long i = v * lanes + lane;
                const double wv = weighted ? l1_real(ws.v[lane]) : 1.0;
                const double gv = g_array ? l1_real(g[i * g_step]) : geo.g_scalar;
                l1_pointwise<Tag>(geo, is_complex, xs.v[lane], ys.v[lane], wv, gv,
                                  values.v[lane], gs.v[lane]);
            }
            if (geo.flags & L1_WRITE_LOSS) l1_store_pack<R, lanes>(loss, v, values);
            if (geo.flags & L1_WRITE_GRAD) l1_store_pack<S, lanes>(gx, v, gs);
        }
        for (long long i = vectors * lanes + start; i < geo.rows; i += step) {
            const double wv = weighted ? l1_real(w[i]) : 1.0;
            const double gv = g_array ? l1_real(g[i * g_step]) : geo.g_scalar;
            S grad;
            R value;
            l1_pointwise<Tag>(geo, is_complex, x[i], y[i], wv, gv, value, grad);
            if (geo.flags & L1_WRITE_LOSS) loss[i] = value;
            if (geo.flags & L1_WRITE_GRAD) gx[i] = grad;
        }
    }
}
"""


def specialization(kernel: str, dtype: str, vec: int | None = None) -> str:
    """The C++ name expression of one kernel specialization.

    Parameters
    ----------
    kernel : str
        "l1_rows", "l1_elementwise" or "l1_finish".
    dtype : str
        The compute dtype ("float32", "complex64", ...).
    vec : int or None
        0 (strided), 1 (contiguous) or the 128-bit lane count; None for "l1_finish".

    Returns
    -------
    str
        Such as ``"l1_rows<F32, 4>"``.
    """
    tag = TAGS[dtype][0]
    if kernel == "l1_finish":
        return f"l1_finish<{tag}>"
    return f"{kernel}<{tag}, {vec}>"


def name_expressions() -> tuple[str, ...]:
    """Every specialization the backend can launch, in a fixed order."""
    names = []
    for dtype, (_, lanes) in TAGS.items():
        for kernel in ("l1_rows", "l1_elementwise"):
            for vec in sorted({0, 1, lanes}):
                names.append(specialization(kernel, dtype, vec))
        names.append(specialization("l1_finish", dtype))
    return tuple(names)
