/*
 * metrics: the shared region of an instance's counters (see metrics.h).
 * Owns the mapping, the claiming and freeing of slots, and the sums
 * readers see. A slot has one writer, its owner, which stores with relaxed
 * atomics; owner changes and the folding of counters into the retired
 * totals happen under a lock, inside a sequence count that readers retry
 * on, so a counter is never seen twice or not at all.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/mman.h>

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/metrics.h"
#include "common/util.h"

#if !defined(MAP_ANON) && defined(MAP_ANONYMOUS)
#define MAP_ANON	MAP_ANONYMOUS
#endif

/* Atomics shared between processes must not hide a lock. */
#if ATOMIC_INT_LOCK_FREE != 2 || ATOMIC_LONG_LOCK_FREE != 2 || \
    ATOMIC_LLONG_LOCK_FREE != 2
#error "metrics needs lock-free atomic int, long and long long"
#endif

#define METRICS_STALE_MS	10000	/* a slot not beating for this long
					 * (its pid reused, say) has no
					 * gauges */
#define METRICS_READ_TRIES	100	/* snapshots retried while owners
					 * change */

struct metrics_slot {
	_Alignas(64) atomic_long owner;	/* pid; 0: free */
	atomic_int		 role;	/* enum metrics_role */
	atomic_int		 id;
	atomic_int_least64_t	 started_ms;	/* wall clock */
	atomic_int_least64_t	 beat_ms;	/* monotonic */
	atomic_int_least64_t	 gauge[MG__N];
	atomic_uint_least64_t	 counter[MC__N];
};

struct metrics_region {
	int64_t		 started_ms;	/* set before any fork */
	int		 nslots;
	atomic_long	 lock;		/* pid of the holder; 0: free */
	atomic_uint	 seq;		/* odd while slots change owner */
	atomic_int	 used;		/* slots [0, used) were claimed */
	atomic_uint_least64_t	 retired[METRICS_NROLES][MC__N];
	/* The hub's samples of each partition's inbox, plus 1 (0: none). */
	atomic_int_least64_t	 inbox[METRICS_PARTS][2];
	struct metrics_slot	 slots[];
};

static int	metrics_alive(long);
static void	metrics_lock(void);
static void	metrics_unlock(void);
static void	metrics_fold(struct metrics_slot *);
static void	metrics_slot_init(struct metrics_slot *, long,
		    enum metrics_role, int);
static void	metrics_add(atomic_uint_least64_t *, uint64_t);

const int64_t metrics_bucket_us[METRICS_BUCKETS] = {
	500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
	1000000, 2500000, 5000000, INT64_MAX
};

/* Inherited across fork(); NULL until metrics_init(). */
static struct metrics_region *region;
/* This process's slot: in the region once attached, else own_private. */
static struct metrics_slot own_private;
static struct metrics_slot *self = &own_private;

int
metrics_init(int nslots)
{
	size_t size;
	void *p;

	if (region != NULL)
		return 0;
	if (nslots < 1) {
		errno = EINVAL;
		return -1;
	}
	size = sizeof(*region) + (size_t)nslots * sizeof(region->slots[0]);
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANON,
	    -1, 0);
	if (p == MAP_FAILED)
		return -1;
	/* A fresh anonymous mapping is zero: every slot free, every sum 0. */
	region = p;
	region->nslots = nslots;
	region->started_ms = util_now_ms();
	return 0;
}

int
metrics_attach(enum metrics_role role, int id)
{
	struct metrics_slot *s;
	long me = (long)getpid(), pid;
	int rc = -1, used;

	metrics_slot_init(&own_private, me, role, id);
	self = &own_private;
	if (region == NULL)
		return -1;
	metrics_lock();
	for (int i = 0; i < region->nslots; i++) {
		s = &region->slots[i];
		pid = atomic_load_explicit(&s->owner, memory_order_relaxed);
		if (pid != 0 && metrics_alive(pid))
			continue;
		/* Free, or its owner died without detaching. */
		metrics_fold(s);
		metrics_slot_init(s, me, role, id);
		used = atomic_load_explicit(&region->used,
		    memory_order_relaxed);
		if (i >= used)
			atomic_store_explicit(&region->used, i + 1,
			    memory_order_relaxed);
		self = s;
		rc = 0;
		break;
	}
	metrics_unlock();
	return rc;
}

void
metrics_detach(void)
{
	struct metrics_slot *s = self;

	if (s == &own_private || region == NULL)
		return;
	metrics_slot_init(&own_private, (long)getpid(),
	    atomic_load_explicit(&s->role, memory_order_relaxed),
	    atomic_load_explicit(&s->id, memory_order_relaxed));
	self = &own_private;
	metrics_lock();
	metrics_fold(s);
	atomic_store_explicit(&s->owner, 0, memory_order_relaxed);
	metrics_unlock();
}

void
metrics_beat(void)
{
	atomic_store_explicit(&self->beat_ms, util_mono_ms(),
	    memory_order_relaxed);
}

/* ---- the writer's side --------------------------------------------------- */

void
metrics_count(enum metrics_counter c, uint64_t n)
{
	if ((unsigned)c < MC__N)
		metrics_add(&self->counter[c], n);
}

void
metrics_set(enum metrics_gauge g, int64_t v)
{
	if ((unsigned)g < MG__N)
		atomic_store_explicit(&self->gauge[g], v, memory_order_relaxed);
}

void
metrics_http(int route, int status)
{
	if (route < 0 || route >= METRICS_ROUTES || status < 100 ||
	    status > 599)
		return;
	metrics_add(&self->counter[METRICS_HTTP(route, status / 100 - 1)], 1);
}

/* One latency into the histogram starting at bucket0 and its sum. */
static void
metrics_observe(int bucket0, int sum, int64_t usec)
{
	int i = 0;

	if (usec < 0)
		usec = 0;
	while (usec > metrics_bucket_us[i])
		i++;
	metrics_add(&self->counter[bucket0 + i], 1);
	metrics_add(&self->counter[sum], (uint64_t)usec);
}

void
metrics_db_observe(int64_t usec)
{
	metrics_observe(MC_DB_BUCKET0, MC_DB_USEC, usec);
}

void
metrics_redis_observe(int64_t usec)
{
	metrics_observe(MC_REDIS_BUCKET0, MC_REDIS_USEC, usec);
}

uint64_t
metrics_own_counter(enum metrics_counter c)
{
	if ((unsigned)c >= MC__N)
		return 0;
	return atomic_load_explicit(&self->counter[c], memory_order_relaxed);
}

void
metrics_inbox_set(int n, int64_t length, int64_t pending)
{
	if (region == NULL || n < 0 || n >= METRICS_PARTS)
		return;
	atomic_store_explicit(&region->inbox[n][0], length + 1,
	    memory_order_relaxed);
	atomic_store_explicit(&region->inbox[n][1], pending + 1,
	    memory_order_relaxed);
}

int
metrics_inbox_get(int n, int64_t *length, int64_t *pending)
{
	if (region == NULL || n < 0 || n >= METRICS_PARTS)
		return -1;
	*length = atomic_load_explicit(&region->inbox[n][0],
	    memory_order_relaxed) - 1;
	*pending = atomic_load_explicit(&region->inbox[n][1],
	    memory_order_relaxed) - 1;
	return *length < 0 || *pending < 0 ? -1 : 0;
}

void
metrics_part(int n, int led)
{
	int64_t bit, v;
	int g;

	if (self == NULL || n < 0 || n >= 64 * METRICS_PART_WORDS)
		return;
	g = MG_PARTS0 + n / 64;
	bit = (int64_t)((uint64_t)1 << (n % 64));
	v = atomic_load_explicit(&self->gauge[g], memory_order_relaxed);
	v = led ? v | bit : v & ~bit;
	atomic_store_explicit(&self->gauge[g], v, memory_order_relaxed);
}

int64_t
metrics_own_gauge(enum metrics_gauge g)
{
	if ((unsigned)g >= MG__N)
		return 0;
	return atomic_load_explicit(&self->gauge[g], memory_order_relaxed);
}

uint64_t
metrics_own_http_class(int cls)
{
	uint64_t n = 0;

	if (cls < 0 || cls >= METRICS_CLASSES)
		return 0;
	for (int r = 0; r < METRICS_ROUTES; r++)
		n += metrics_own_counter(METRICS_HTTP(r, cls));
	return n;
}

/* ---- the reader's side --------------------------------------------------- */

struct metrics_snapshot *
metrics_snapshot(void)
{
	struct metrics_snapshot *m;
	struct metrics_slot *s;
	int64_t mono, v, *oldest;
	unsigned seq;
	long pid;
	int nslots = region != NULL ? region->nslots : 1, used, role;

	m = malloc(sizeof(*m) + (size_t)nslots * sizeof(m->procs[0]));
	if (m == NULL)
		return NULL;
	for (int tries = 0;; tries++) {
		memset(m, 0, sizeof(*m));
		m->now_ms = util_now_ms();
		mono = util_mono_ms();
		if (region == NULL) {
			/* No shared region (a test binary): this process. */
			seq = 0;
			s = &own_private;
			used = 1;
		} else {
			seq = atomic_load_explicit(&region->seq,
			    memory_order_acquire);
			if ((seq & 1) && tries < METRICS_READ_TRIES) {
				sched_yield();
				continue;
			}
			m->started_ms = region->started_ms;
			for (int r = 0; r < METRICS_NROLES; r++)
				for (int c = 0; c < MC__N; c++)
					m->counter[r][c] = atomic_load_explicit(
					    &region->retired[r][c],
					    memory_order_relaxed);
			s = region->slots;
			used = atomic_load_explicit(&region->used,
			    memory_order_relaxed);
		}
		for (int i = 0; i < used; i++, s++) {
			role = atomic_load_explicit(&s->role,
			    memory_order_relaxed);
			if (role < 0 || role >= METRICS_NROLES)
				continue;
			for (int c = 0; c < MC__N; c++)
				m->counter[role][c] += atomic_load_explicit(
				    &s->counter[c], memory_order_relaxed);
			pid = atomic_load_explicit(&s->owner,
			    memory_order_relaxed);
			if (pid == 0 || (region != NULL && (mono -
			    atomic_load_explicit(&s->beat_ms,
			    memory_order_relaxed) > METRICS_STALE_MS ||
			    !metrics_alive(pid))))
				continue;
			oldest = &m->gauge[role][MG_INBOX_OLDEST_MS];
			for (int g = 0; g < MG__N; g++) {
				v = atomic_load_explicit(&s->gauge[g],
				    memory_order_relaxed);
				if (g >= MG_PARTS0)
					m->gauge[role][g] |= v;
				else if (g != MG_INBOX_OLDEST_MS)
					m->gauge[role][g] += v;
				else if (v > 0 && (*oldest == 0 || v < *oldest))
					*oldest = v;
			}
			m->procs[m->nprocs].pid = pid;
			m->procs[m->nprocs].role = role;
			m->procs[m->nprocs].id = atomic_load_explicit(&s->id,
			    memory_order_relaxed);
			m->procs[m->nprocs].started_ms = atomic_load_explicit(
			    &s->started_ms, memory_order_relaxed);
			m->nprocs++;
		}
		if (region == NULL)
			break;
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&region->seq, memory_order_relaxed) ==
		    seq || tries >= METRICS_READ_TRIES)
			break;
	}
	return m;
}

/* ---- internals ----------------------------------------------------------- */

/* A process that exists (a zombie too, until the master reaps it). */
static int
metrics_alive(long pid)
{
	return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

/*
 * Claims and detaches are rare: a spin lock, which a holder killed inside
 * it (a few microseconds' window) does not leave taken for ever.
 */
static void
metrics_lock(void)
{
	long me = (long)getpid(), holder;
	unsigned seq;

	for (;;) {
		holder = 0;
		if (atomic_compare_exchange_weak_explicit(&region->lock,
		    &holder, me, memory_order_acquire, memory_order_relaxed))
			break;
		if (holder != 0 && !metrics_alive(holder) &&
		    atomic_compare_exchange_strong_explicit(&region->lock,
		    &holder, me, memory_order_acquire, memory_order_relaxed))
			break;
		sched_yield();
	}
	/* Odd from here: readers retry. (Odd already if a dead holder's.) */
	seq = atomic_load_explicit(&region->seq, memory_order_relaxed);
	if ((seq & 1) == 0)
		atomic_store_explicit(&region->seq, seq + 1,
		    memory_order_relaxed);
	atomic_thread_fence(memory_order_seq_cst);
}

static void
metrics_unlock(void)
{
	atomic_fetch_add_explicit(&region->seq, 1, memory_order_release);
	atomic_store_explicit(&region->lock, 0, memory_order_release);
}

/* Under the lock: move s's counters into the retired totals of its role
 * and clear it. */
static void
metrics_fold(struct metrics_slot *s)
{
	int role = atomic_load_explicit(&s->role, memory_order_relaxed);
	uint64_t v;

	for (int c = 0; c < MC__N; c++) {
		v = atomic_load_explicit(&s->counter[c], memory_order_relaxed);
		if (v == 0)
			continue;
		if (role >= 0 && role < METRICS_NROLES)
			metrics_add(&region->retired[role][c], v);
		atomic_store_explicit(&s->counter[c], 0, memory_order_relaxed);
	}
	for (int g = 0; g < MG__N; g++)
		atomic_store_explicit(&s->gauge[g], 0, memory_order_relaxed);
}

static void
metrics_slot_init(struct metrics_slot *s, long pid, enum metrics_role role,
    int id)
{
	for (int c = 0; c < MC__N; c++)
		atomic_store_explicit(&s->counter[c], 0, memory_order_relaxed);
	for (int g = 0; g < MG__N; g++)
		atomic_store_explicit(&s->gauge[g], 0, memory_order_relaxed);
	atomic_store_explicit(&s->role, (int)role, memory_order_relaxed);
	atomic_store_explicit(&s->id, id, memory_order_relaxed);
	atomic_store_explicit(&s->started_ms, util_now_ms(),
	    memory_order_relaxed);
	atomic_store_explicit(&s->beat_ms, util_mono_ms(),
	    memory_order_relaxed);
	atomic_store_explicit(&s->owner, pid, memory_order_relaxed);
}

/* One writer per slot (its owner; the lock holder for retired): a load
 * and a store, no locked instruction. */
static void
metrics_add(atomic_uint_least64_t *p, uint64_t n)
{
	atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed)
	    + n, memory_order_relaxed);
}
