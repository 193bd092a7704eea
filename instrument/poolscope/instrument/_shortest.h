/* Shortest round-trip decimal text of a double, byte for byte as float.__repr__.
 *
 * Why: the two hot lines carry two floats each, and CPython's repr (dtoa.c in mode 0)
 * does bignum arithmetic for nearly every double - a perf profile of the stream
 * benchmark's app put ~30% of its CPU in _Py_dg_dtoa and its helpers. Grisu3
 * (Loitsch, "Printing Floating-Point Numbers Quickly and Accurately with Integers",
 * PLDI 2010; the fast path of Google's double-conversion) finds the same digits with
 * 64-bit integers in ~99.5% of cases and *knows* when it cannot: then the caller asks
 * PyOS_double_to_string, as repr does. The digits are laid out by format_float_short's
 * rules for 'r' (pystrtod.c). tests/instrument/test_accel_repr.py compares the two on
 * millions of doubles.
 */

#include <stdint.h>

typedef struct {
    uint64_t f;
    int e;
} DiyFp;

/* f * g, rounded to the upper 64 bits (portable: no 128-bit type needed). */
static DiyFp
diy_mul(DiyFp x, DiyFp y)
{
    const uint64_t m32 = 0xFFFFFFFFu;
    uint64_t a = x.f >> 32, b = x.f & m32, c = y.f >> 32, d = y.f & m32;
    uint64_t ac = a * c, bc = b * c, ad = a * d, bd = b * d;
    uint64_t tmp = (bd >> 32) + (ad & m32) + (bc & m32);
    tmp += 1u << 31; /* round */
    DiyFp r = {ac + (ad >> 32) + (bc >> 32) + (tmp >> 32), x.e + y.e + 64};
    return r;
}

static DiyFp
diy_normalize(DiyFp v)
{
    while (!(v.f & 0xFFC0000000000000ULL)) {
        v.f <<= 10;
        v.e -= 10;
    }
    while (!(v.f & 0x8000000000000000ULL)) {
        v.f <<= 1;
        v.e -= 1;
    }
    return v;
}

typedef struct {
    uint64_t f;
    int16_t e;
    int16_t k;
} CachedPower;

/* 10^k for k = -348, -340, ..., 340: 64-bit significand rounded to nearest, binary
 * exponent (generated with fractions.Fraction; the first and last rows equal
 * double-conversion's). */
static const CachedPower cached_powers[] = {
    {0xfa8fd5a0081c0288ULL, -1220, -348},
    {0xbaaee17fa23ebf76ULL, -1193, -340},
    {0x8b16fb203055ac76ULL, -1166, -332},
    {0xcf42894a5dce35eaULL, -1140, -324},
    {0x9a6bb0aa55653b2dULL, -1113, -316},
    {0xe61acf033d1a45dfULL, -1087, -308},
    {0xab70fe17c79ac6caULL, -1060, -300},
    {0xff77b1fcbebcdc4fULL, -1034, -292},
    {0xbe5691ef416bd60cULL, -1007, -284},
    {0x8dd01fad907ffc3cULL, -980, -276},
    {0xd3515c2831559a83ULL, -954, -268},
    {0x9d71ac8fada6c9b5ULL, -927, -260},
    {0xea9c227723ee8bcbULL, -901, -252},
    {0xaecc49914078536dULL, -874, -244},
    {0x823c12795db6ce57ULL, -847, -236},
    {0xc21094364dfb5637ULL, -821, -228},
    {0x9096ea6f3848984fULL, -794, -220},
    {0xd77485cb25823ac7ULL, -768, -212},
    {0xa086cfcd97bf97f4ULL, -741, -204},
    {0xef340a98172aace5ULL, -715, -196},
    {0xb23867fb2a35b28eULL, -688, -188},
    {0x84c8d4dfd2c63f3bULL, -661, -180},
    {0xc5dd44271ad3cdbaULL, -635, -172},
    {0x936b9fcebb25c996ULL, -608, -164},
    {0xdbac6c247d62a584ULL, -582, -156},
    {0xa3ab66580d5fdaf6ULL, -555, -148},
    {0xf3e2f893dec3f126ULL, -529, -140},
    {0xb5b5ada8aaff80b8ULL, -502, -132},
    {0x87625f056c7c4a8bULL, -475, -124},
    {0xc9bcff6034c13053ULL, -449, -116},
    {0x964e858c91ba2655ULL, -422, -108},
    {0xdff9772470297ebdULL, -396, -100},
    {0xa6dfbd9fb8e5b88fULL, -369, -92},
    {0xf8a95fcf88747d94ULL, -343, -84},
    {0xb94470938fa89bcfULL, -316, -76},
    {0x8a08f0f8bf0f156bULL, -289, -68},
    {0xcdb02555653131b6ULL, -263, -60},
    {0x993fe2c6d07b7facULL, -236, -52},
    {0xe45c10c42a2b3b06ULL, -210, -44},
    {0xaa242499697392d3ULL, -183, -36},
    {0xfd87b5f28300ca0eULL, -157, -28},
    {0xbce5086492111aebULL, -130, -20},
    {0x8cbccc096f5088ccULL, -103, -12},
    {0xd1b71758e219652cULL, -77, -4},
    {0x9c40000000000000ULL, -50, 4},
    {0xe8d4a51000000000ULL, -24, 12},
    {0xad78ebc5ac620000ULL, 3, 20},
    {0x813f3978f8940984ULL, 30, 28},
    {0xc097ce7bc90715b3ULL, 56, 36},
    {0x8f7e32ce7bea5c70ULL, 83, 44},
    {0xd5d238a4abe98068ULL, 109, 52},
    {0x9f4f2726179a2245ULL, 136, 60},
    {0xed63a231d4c4fb27ULL, 162, 68},
    {0xb0de65388cc8ada8ULL, 189, 76},
    {0x83c7088e1aab65dbULL, 216, 84},
    {0xc45d1df942711d9aULL, 242, 92},
    {0x924d692ca61be758ULL, 269, 100},
    {0xda01ee641a708deaULL, 295, 108},
    {0xa26da3999aef774aULL, 322, 116},
    {0xf209787bb47d6b85ULL, 348, 124},
    {0xb454e4a179dd1877ULL, 375, 132},
    {0x865b86925b9bc5c2ULL, 402, 140},
    {0xc83553c5c8965d3dULL, 428, 148},
    {0x952ab45cfa97a0b3ULL, 455, 156},
    {0xde469fbd99a05fe3ULL, 481, 164},
    {0xa59bc234db398c25ULL, 508, 172},
    {0xf6c69a72a3989f5cULL, 534, 180},
    {0xb7dcbf5354e9beceULL, 561, 188},
    {0x88fcf317f22241e2ULL, 588, 196},
    {0xcc20ce9bd35c78a5ULL, 614, 204},
    {0x98165af37b2153dfULL, 641, 212},
    {0xe2a0b5dc971f303aULL, 667, 220},
    {0xa8d9d1535ce3b396ULL, 694, 228},
    {0xfb9b7cd9a4a7443cULL, 720, 236},
    {0xbb764c4ca7a44410ULL, 747, 244},
    {0x8bab8eefb6409c1aULL, 774, 252},
    {0xd01fef10a657842cULL, 800, 260},
    {0x9b10a4e5e9913129ULL, 827, 268},
    {0xe7109bfba19c0c9dULL, 853, 276},
    {0xac2820d9623bf429ULL, 880, 284},
    {0x80444b5e7aa7cf85ULL, 907, 292},
    {0xbf21e44003acdd2dULL, 933, 300},
    {0x8e679c2f5e44ff8fULL, 960, 308},
    {0xd433179d9c8cb841ULL, 986, 316},
    {0x9e19db92b4e31ba9ULL, 1013, 324},
    {0xeb96bf6ebadf77d9ULL, 1039, 332},
    {0xaf87023b9bf0ee6bULL, 1066, 340},
};

#define CACHED_POWERS_N ((int)(sizeof(cached_powers) / sizeof(cached_powers[0])))

/* The cached power c with min_e <= c.e <= max_e (the range is 28 wide, the table's
 * step ~26.6 binary orders: one always exists). */
static const CachedPower *
cached_power(int min_e, int max_e)
{
    /* ceil((min_e + 63) * log10(2)) is the decimal exponent wanted; start there. */
    double k = ceil((min_e + 63) * 0.30102999566398114);
    int i = (348 + (int)k - 1) / 8 + 1;
    if (i < 0)
        i = 0;
    if (i >= CACHED_POWERS_N)
        i = CACHED_POWERS_N - 1;
    while (i + 1 < CACHED_POWERS_N && cached_powers[i].e < min_e)
        i++;
    while (i > 0 && cached_powers[i].e > max_e)
        i--;
    if (cached_powers[i].e < min_e || cached_powers[i].e > max_e)
        return NULL;
    return &cached_powers[i];
}

/* Grisu3's round-weed: move the last digit towards w and check the result is the
 * closest shortest one. 0 when that cannot be guaranteed. */
static int
round_weed(char *buffer, int length, uint64_t distance_too_high_w, uint64_t unsafe_interval,
           uint64_t rest, uint64_t ten_kappa, uint64_t unit)
{
    uint64_t small_distance = distance_too_high_w - unit;
    uint64_t big_distance = distance_too_high_w + unit;
    while (rest < small_distance && unsafe_interval - rest >= ten_kappa &&
           (rest + ten_kappa < small_distance ||
            small_distance - rest >= rest + ten_kappa - small_distance)) {
        buffer[length - 1]--;
        rest += ten_kappa;
    }
    if (rest < big_distance && unsafe_interval - rest >= ten_kappa &&
        (rest + ten_kappa < big_distance ||
         big_distance - rest > rest + ten_kappa - big_distance))
        return 0;
    return 2 * unit <= rest && rest <= unsafe_interval - 4 * unit;
}

/* The digits of the number in [low, high] (scaled boundaries) closest to w, shortest;
 * 0 when Grisu3 cannot be sure. */
static int
digit_gen(DiyFp low, DiyFp w, DiyFp high, char *buffer, int *length, int *kappa)
{
    uint64_t unit = 1;
    uint64_t too_low = low.f - unit, too_high = high.f + unit;
    uint64_t unsafe_interval = too_high - too_low;
    int shift = -w.e;
    uint64_t one = (uint64_t)1 << shift;
    uint32_t integrals = (uint32_t)(too_high >> shift);
    uint64_t fractionals = too_high & (one - 1);
    uint32_t divisor = 1;
    int digits = 1;
    while (integrals / divisor >= 10) {
        divisor *= 10;
        digits++;
    }
    *kappa = digits;
    *length = 0;
    while (*kappa > 0) {
        int digit = (int)(integrals / divisor);
        buffer[(*length)++] = (char)('0' + digit);
        integrals %= divisor;
        (*kappa)--;
        uint64_t rest = ((uint64_t)integrals << shift) + fractionals;
        if (rest < unsafe_interval)
            return round_weed(buffer, *length, too_high - w.f, unsafe_interval, rest,
                              (uint64_t)divisor << shift, unit);
        divisor /= 10;
    }
    for (;;) {
        fractionals *= 10;
        unit *= 10;
        unsafe_interval *= 10;
        int digit = (int)(fractionals >> shift);
        buffer[(*length)++] = (char)('0' + digit);
        fractionals &= one - 1;
        (*kappa)--;
        if (fractionals < unsafe_interval)
            return round_weed(buffer, *length, (too_high - w.f) * unit, unsafe_interval,
                              fractionals, one, unit);
        if (*length >= 18) /* more digits than any double needs: give up */
            return 0;
    }
}

/* Grisu3 for a finite v > 0: digits (no terminator) and the decimal exponent, with
 * value = digits * 10^exponent. 0 when the caller must fall back. */
static int
grisu3(double v, char *buffer, int *length, int *decimal_exponent)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof(bits));
    uint64_t frac = bits & 0x000FFFFFFFFFFFFFULL;
    int biased = (int)((bits >> 52) & 0x7FF);
    DiyFp x;
    if (biased == 0) {
        x.f = frac;
        x.e = 1 - 1075;
    } else {
        x.f = frac | 0x0010000000000000ULL;
        x.e = biased - 1075;
    }
    /* The boundaries: halfway to the neighbours (the lower one is nearer at a power
     * of two, except at the smallest normal exponent). */
    DiyFp plus = diy_normalize((DiyFp){(x.f << 1) + 1, x.e - 1});
    DiyFp minus;
    if (frac == 0 && biased > 1)
        minus = (DiyFp){(x.f << 2) - 1, x.e - 2};
    else
        minus = (DiyFp){(x.f << 1) - 1, x.e - 1};
    minus.f <<= minus.e - plus.e;
    minus.e = plus.e;
    DiyFp w = diy_normalize(x);
    const CachedPower *c = cached_power(-60 - (w.e + 64), -32 - (w.e + 64));
    if (c == NULL)
        return 0;
    DiyFp ten_mk = {c->f, c->e};
    DiyFp sw = diy_mul(w, ten_mk);
    DiyFp sminus = diy_mul(minus, ten_mk);
    DiyFp splus = diy_mul(plus, ten_mk);
    int kappa;
    if (!digit_gen(sminus, sw, splus, buffer, length, &kappa))
        return 0;
    *decimal_exponent = -c->k + kappa;
    return 1;
}

/* repr(v) for a finite v into out (at least 32 bytes); its length, or -1 when Grisu3
 * gave up (the caller falls back to PyOS_double_to_string). */
static int
shortest_repr(double v, char *out)
{
    char *p = out;
    if (signbit(v)) {
        *p++ = '-';
        v = -v;
    }
    if (v == 0.0) {
        memcpy(p, "0.0", 3);
        return (int)(p - out) + 3;
    }
    char digits[24];
    int n, exp10;
    if (!grisu3(v, digits, &n, &exp10))
        return -1;
    /* Trailing zeros of an integral digit string are part of the exponent. */
    while (n > 1 && digits[n - 1] == '0') {
        n--;
        exp10++;
    }
    int decpt = n + exp10; /* value = 0.digits * 10^decpt */
    if (decpt <= -4 || decpt > 16) {
        *p++ = digits[0];
        if (n > 1) {
            *p++ = '.';
            memcpy(p, digits + 1, (size_t)(n - 1));
            p += n - 1;
        }
        int e = decpt - 1;
        *p++ = 'e';
        *p++ = e < 0 ? '-' : '+';
        if (e < 0)
            e = -e;
        if (e >= 100) {
            *p++ = (char)('0' + e / 100);
            e %= 100;
            *p++ = (char)('0' + e / 10);
            *p++ = (char)('0' + e % 10);
        } else {
            *p++ = (char)('0' + e / 10);
            *p++ = (char)('0' + e % 10);
        }
    } else if (decpt <= 0) {
        *p++ = '0';
        *p++ = '.';
        memset(p, '0', (size_t)-decpt);
        p += -decpt;
        memcpy(p, digits, (size_t)n);
        p += n;
    } else if (decpt >= n) {
        memcpy(p, digits, (size_t)n);
        p += n;
        memset(p, '0', (size_t)(decpt - n));
        p += decpt - n;
        *p++ = '.';
        *p++ = '0';
    } else {
        memcpy(p, digits, (size_t)decpt);
        p += decpt;
        *p++ = '.';
        memcpy(p, digits + decpt, (size_t)(n - decpt));
        p += n - decpt;
    }
    return (int)(p - out);
}
