/*
 * crypto: SHA-256 for session keys, SHA-1 and base64 for the WebSocket
 * handshake, through libcrypto's EVP interface (the same on OpenSSL 1.1,
 * 3.x and LibreSSL).
 */
#include "config.h"

#include <openssl/evp.h>

#include "common/crypto.h"

void
crypto_sha256_hex(const void *data, size_t len, char *hex)
{
	static const char digits[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
	for (unsigned int i = 0; i < n; i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 15];
	}
	hex[2 * n] = '\0';
}

void
crypto_sha1(const void *data, size_t len, unsigned char md[20])
{
	unsigned int n = 0;

	EVP_Digest(data, len, md, &n, EVP_sha1(), NULL);
}

void
crypto_base64(const unsigned char *in, size_t len, char *out)
{
	EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}
