/* err.c -- static strings for error codes. */
#include "err.h"

#include <string.h>

const char *err_str(int rc)
{
    switch (rc) {
    case 0: return "ok";
    case ERR_TIMEOUT: return "timeout";
    case ERR_CLOSED: return "closed";
    case ERR_NOTFOUND: return "not found";
    case ERR_BUSY: return "busy";
    case ERR_UNAVAILABLE: return "unavailable";
    case ERR_PROTOCOL: return "protocol";
    case ERR_QUERY: return "query";
    case ERR_TOOLARGE: return "too large";
    case ERR_INVALID: return "invalid";
    case ERR_CANCELED: return "canceled";
    default: break;
    }
    if (rc < 0 && rc > ERR_BASE)
        return strerror(-rc);
    return "unknown error";
}
