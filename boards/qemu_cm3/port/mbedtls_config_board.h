// qemu_cm3 (cellmqtt): mbed TLS for hashlib only -- SHA-1 (EnOS signmethod "sha1"), SHA-256 and MD5; no TLS,
// no entropy, no bignum. Only sha1.c, sha256.c, md5.c and platform_util.c of lib/mbedtls are compiled
// (mpconfigboard.mk); the ssl module stays off.
#ifndef CELLMQTT_QEMU_CM3_MBEDTLS_CONFIG_H
#define CELLMQTT_QEMU_CM3_MBEDTLS_CONFIG_H

#define MBEDTLS_SHA1_C
#define MBEDTLS_SHA224_C  // sha256.c builds SHA-224 and SHA-256 together
#define MBEDTLS_SHA256_C
#define MBEDTLS_SHA256_SMALLER  // the loop form: smaller in flash
#define MBEDTLS_MD5_C

#endif
