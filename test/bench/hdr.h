/*
 * hdr: a small HDR-style (log-linear) histogram of non-negative 64-bit
 * values, for latencies in nanoseconds.
 *
 * Values below 256 each have their own bucket; above, every power of two
 * is cut into 128 linear sub-buckets, so a recorded value is known to
 * within 1/128 (0.8 %, a little over two significant digits) up to
 * HDR_MAX (about 1100 s in nanoseconds); larger values land in the last
 * bucket. Exact minimum, maximum and sum are kept besides.
 *
 * Recording is a few instructions and touches one counter: no allocation,
 * no locking. A histogram belongs to one thread; histograms of several
 * threads or processes are combined with hdr_merge() (or, across
 * processes, hdr_add_bucket() from a serialised form).
 */
#ifndef GC_BENCH_HDR_H
#define GC_BENCH_HDR_H

#include <stdint.h>

#define HDR_SUB_BITS	8			/* 256 exact values */
#define HDR_SUB		(1u << HDR_SUB_BITS)
#define HDR_HALF	(HDR_SUB / 2)		/* 128 sub-buckets per octave */
#define HDR_MAX_BITS	40			/* values up to 2^40 - 1 */
#define HDR_BUCKETS	(HDR_SUB + (HDR_MAX_BITS - HDR_SUB_BITS) * HDR_HALF)
#define HDR_MAX		((UINT64_C(1) << HDR_MAX_BITS) - 1)

struct hdr {
	uint64_t	count;
	uint64_t	min;
	uint64_t	max;
	uint64_t	sum;	/* wraps after ~585 years of nanoseconds */
	uint64_t	b[HDR_BUCKETS];
};

void		hdr_init(struct hdr *);
void		hdr_record(struct hdr *, uint64_t v);
void		hdr_merge(struct hdr *dst, const struct hdr *src);
/* The value below which p percent (0..100) of the values lie: the upper
 * edge of the bucket that holds it, never above the exact maximum. */
uint64_t	hdr_percentile(const struct hdr *, double p);
double		hdr_mean(const struct hdr *);
/* For serialisation: bucket i counts values in [lo, hi]. */
unsigned	hdr_index(uint64_t v);
uint64_t	hdr_bucket_lo(unsigned i);
uint64_t	hdr_bucket_hi(unsigned i);
/* Add n values to bucket i (min, max and sum are the caller's). */
void		hdr_add_bucket(struct hdr *, unsigned i, uint64_t n);

#endif
