/*
 * ferry: the command line. Kept thin: parse options, load the config,
 * hand it to server_run (src/server.h). Everything else lives in libferry.a.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "diff.h"
#include "server.h"
#include "tls.h"

#ifndef FERRY_VERSION
#define FERRY_VERSION "0.1.0"
#endif

#define DEFAULT_CONFIG SYSCONFDIR "/ferry/ferry.yaml"

/* Exit codes, also listed in --help. */
enum {
    EXIT_OK = 0,     /* clean shutdown, or -t: the config is valid */
    EXIT_CONFIG = 1, /* the config has errors (printed to stderr) */
    EXIT_USAGE = 2,  /* bad command line */
};

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: ferry [-t] [-c FILE]\n"
            "       ferry diff [-c FILE]\n"
            "HTTP reverse proxy and API gateway.\n"
            "\n"
            "  -c, --config FILE  configuration file (default: %s)\n"
            "  -t, --test         check the configuration, print a summary and exit\n"
            "  -V, --version      print the version and exit\n"
            "  -h, --help         print this help and exit\n"
            "  diff               print what reloading FILE would change in the running ferry\n"
            "                     (read from its admin.listen): exit 0 nothing, 1 changes,\n"
            "                     2 error\n"
            "\n"
            "Errors in the configuration are printed as FILE:LINE:COLUMN: PATH: message.\n"
            "\n"
            "Exit status:\n"
            "  0  ferry shut down cleanly, or (-t) the configuration is valid\n"
            "  1  the configuration has errors, or the proxy failed to start or run\n"
            "  2  bad command line\n",
            DEFAULT_CONFIG);
}

int main(int argc, char **argv)
{
    /* First thing: the signals ferry handles stay pending until server_run
     * has its handlers in place (worker threads inherit the mask), so a
     * logrotate SIGUSR1 or a SIGHUP during start-up does not kill it. */
    sigset_t handled;
    sigemptyset(&handled);
    sigaddset(&handled, SIGTERM);
    sigaddset(&handled, SIGINT);
    sigaddset(&handled, SIGHUP);
    sigaddset(&handled, SIGUSR1);
    sigprocmask(SIG_BLOCK, &handled, NULL);

    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"test", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = DEFAULT_CONFIG;
    bool test = false, diff = false;
    if (argc > 1 && strcmp(argv[1], "diff") == 0) {
        diff = true;
        argc--;
        argv++;
    }
    int opt;
    while ((opt = getopt_long(argc, argv, "c:tVh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            test = true;
            break;
        case 'V':
            printf("ferry %s\n", FERRY_VERSION);
            return EXIT_OK;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ferry: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }

    if (diff)
        return diff_run(path, stdout, stderr);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t t0 = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    struct config *cfg;
    if (config_load(path, &cfg, stderr) != 0)
        return EXIT_CONFIG;
    if (tls_config_load(cfg, stderr) != 0) {
        config_unref(cfg);
        return EXIT_CONFIG;
    }
    if (test) {
        printf("ferry: %s: ok: %zu listener%s, %zu route%s, %zu upstream%s\n", path,
               cfg->nlisteners, cfg->nlisteners == 1 ? "" : "s", cfg->nroutes,
               cfg->nroutes == 1 ? "" : "s", cfg->nupstreams, cfg->nupstreams == 1 ? "" : "s");
        config_unref(cfg);
        return EXIT_OK;
    }
    return server_run(cfg, path, t0);
}
