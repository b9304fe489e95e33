/*
 * hdr: log-linear histogram; see hdr.h.
 */
#include <string.h>

#include "hdr.h"

static unsigned
hdr_msb(uint64_t v)		/* v > 0 */
{
#if defined(__GNUC__) || defined(__clang__)
	return 63u - (unsigned)__builtin_clzll(v);
#else
	unsigned n = 0;

	while (v >>= 1)
		n++;
	return n;
#endif
}

void
hdr_init(struct hdr *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

unsigned
hdr_index(uint64_t v)
{
	unsigned shift;

	if (v < HDR_SUB)
		return (unsigned)v;
	if (v > HDR_MAX)
		v = HDR_MAX;
	shift = hdr_msb(v) - (HDR_SUB_BITS - 1);
	return HDR_SUB + (shift - 1) * HDR_HALF +
	    (unsigned)((v >> shift) - HDR_HALF);
}

uint64_t
hdr_bucket_lo(unsigned i)
{
	unsigned j, shift;

	if (i < HDR_SUB)
		return i;
	j = i - HDR_SUB;
	shift = j / HDR_HALF + 1;
	return (uint64_t)(j % HDR_HALF + HDR_HALF) << shift;
}

uint64_t
hdr_bucket_hi(unsigned i)
{
	unsigned shift;

	if (i < HDR_SUB)
		return i;
	shift = (i - HDR_SUB) / HDR_HALF + 1;
	return hdr_bucket_lo(i) + (UINT64_C(1) << shift) - 1;
}

void
hdr_record(struct hdr *h, uint64_t v)
{
	h->b[hdr_index(v)]++;
	h->count++;
	h->sum += v;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
}

void
hdr_add_bucket(struct hdr *h, unsigned i, uint64_t n)
{
	if (i >= HDR_BUCKETS)
		i = HDR_BUCKETS - 1;
	h->b[i] += n;
	h->count += n;
}

void
hdr_merge(struct hdr *dst, const struct hdr *src)
{
	unsigned i;

	if (src->count == 0)
		return;
	for (i = 0; i < HDR_BUCKETS; i++)
		dst->b[i] += src->b[i];
	dst->count += src->count;
	dst->sum += src->sum;
	if (src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
}

uint64_t
hdr_percentile(const struct hdr *h, double p)
{
	uint64_t want, seen = 0, v;
	unsigned i;

	if (h->count == 0)
		return 0;
	if (p <= 0)
		return h->min;
	if (p >= 100)
		return h->max;
	want = (uint64_t)(p / 100.0 * (double)h->count + 0.5);
	if (want == 0)
		want = 1;
	for (i = 0; i < HDR_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= want) {
			v = hdr_bucket_hi(i);
			if (v > h->max)
				v = h->max;
			if (v < h->min)
				v = h->min;
			return v;
		}
	}
	return h->max;
}

double
hdr_mean(const struct hdr *h)
{
	return h->count ? (double)h->sum / (double)h->count : 0.0;
}
