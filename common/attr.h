/*
 * attr: the compiler attributes every header uses, in one place. GCC and
 * Clang spell them the same way; another compiler gets them as nothing.
 */
#ifndef GC_ATTR_H
#define GC_ATTR_H

#if defined(__GNUC__) || defined(__clang__)
#define GC_PRINTF(f, a)	__attribute__((format(printf, f, a)))
#define GC_NORETURN	__attribute__((noreturn))
#define GC_MUSTCHECK	__attribute__((warn_unused_result))	/* 0 / -1 */
#else
#define GC_PRINTF(f, a)
#define GC_NORETURN
#define GC_MUSTCHECK
#endif

#endif
