/* fuzz_ws_key.c -- core/ws.c's handshake helpers: ws_key_valid on a fuzzed Sec-WebSocket-Key,
 * then ws_accept_value for a key it accepts.
 *
 * ws.c's frame and message handling runs on a socket inside libevent (ws_accept takes a
 * detached connection's fd), so it is not fuzzed here. Oracle: a key is valid exactly when it
 * is the canonical base64 of 16 bytes, which OpenSSL's decoder and encoder decide
 * independently. */
#include "ws.h"

#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int canonical_16(const uint8_t *key, size_t len)
{
    if (len != 24 || memchr(key, '\0', len))
        return 0;
    unsigned char raw[24], back[33];
    if (EVP_DecodeBlock(raw, key, 24) != 18) /* 24 digits -> 18 bytes, padding included */
        return 0;
    EVP_EncodeBlock(back, raw, 16);
    return memcmp(back, key, 24) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *key = malloc(size ? size : 1);
    memcpy(key, data, size);
    int valid = ws_key_valid(key, size);
    if (valid != canonical_16(data, size))
        abort();
    if (valid) {
        char out[29];
        memset(out, 'x', sizeof out);
        ws_accept_value(key, size, out);
        if (strlen(out) != 28)
            abort();
    }
    free(key);
    return 0;
}
