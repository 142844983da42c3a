/* web.h -- the web console's and the browser client's static files, from memory (web.c). */
#ifndef MMO_WEB_H
#define MMO_WEB_H

#include "http.h"

struct web;

/* Read every file under root/admin and root/play (missing trees serve nothing). Requests
 * for other paths go to next(req, next_ud). Never NULL. */
struct web *web_new(const char *root, http_dispatch_cb *next, void *next_ud);
void web_free(struct web *w);
/* The files held. */
int web_files(const struct web *w);
/* An http_dispatch_cb; ud is the struct web. */
void web_dispatch(struct http_req *req, void *ud);

#endif
