/*
 * crypto: the few digests GoChat needs, from libcrypto (OpenSSL or
 * LibreSSL); crypto.c is the only file that includes an OpenSSL header.
 */
#ifndef GC_CRYPTO_H
#define GC_CRYPTO_H

#include <stddef.h>

/* SHA-256 of data as 64 lower-case hex digits and a NUL (hex >= 65). */
void	crypto_sha256_hex(const void *data, size_t len, char *hex);
/* SHA-1 of data (20 bytes into md): the WebSocket handshake's digest. */
void	crypto_sha1(const void *data, size_t len, unsigned char md[20]);
/* Standard base64 with padding; out needs 4 * ceil(len / 3) + 1 bytes. */
void	crypto_base64(const unsigned char *in, size_t len, char *out);

#endif
