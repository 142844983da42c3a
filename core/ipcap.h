/* ipcap.h -- connections per client address, and a cap on them (http.max_connections_per_ip).
 * One table for HTTP and WebSocket: a connection upgraded to WebSocket keeps the place its
 * HTTP connection took, and gives it back when it closes. */
#ifndef CORE_IPCAP_H
#define CORE_IPCAP_H

struct ipcap;

/* max: connections allowed per address (0: no cap; the counts are still kept). */
struct ipcap *ipcap_new(int max);
void ipcap_free(struct ipcap *c);
/* One more connection from ip: 1, or 0 when ip has max already (nothing taken). c may be NULL
 * (no table: always 1). */
int ipcap_take(struct ipcap *c, const char *ip);
/* A connection from ip closed. c may be NULL. */
void ipcap_give(struct ipcap *c, const char *ip);
/* Connections from ip now; addresses with any. */
int ipcap_count(const struct ipcap *c, const char *ip);
int ipcap_addresses(const struct ipcap *c);

#endif
