/*
 * server: runs the proxy on a loaded config until shutdown (implemented by
 * src/server.c). Called once by main.c after config_load succeeded; takes
 * over the caller's reference to cfg. config_path is re-read on SIGHUP
 * (a live reload: see server.c).
 * Returns the process exit status (0 after a clean shutdown).
 */
#ifndef FERRY_SERVER_H
#define FERRY_SERVER_H

#include <stdint.h>

struct config;

/* t0: CLOCK_MONOTONIC microseconds before the config was loaded (its load
 * time goes to STATUS=). */
int server_run(struct config *cfg, const char *config_path, int64_t t0);

#endif
