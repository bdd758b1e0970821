/*
 * server: runs the proxy on a loaded config until shutdown (implemented by
 * src/server.c). Called once by main.c after config_load succeeded; takes
 * over the caller's reference to cfg. config_path is re-read on SIGHUP.
 * Returns the process exit status (0 after a clean shutdown).
 */
#ifndef FERRY_SERVER_H
#define FERRY_SERVER_H

struct config;

int server_run(struct config *cfg, const char *config_path);

#endif
