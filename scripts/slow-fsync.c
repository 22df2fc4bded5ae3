/* A disk whose fsync falls behind, for durability trials (BENCHMARKS.md,
 * "Durability"): preloaded into redis-server, every fsync and fdatasync
 * waits SLOW_FSYNC_MS milliseconds (default 1500) before it runs. Writes
 * are untouched.
 *
 *   gcc -shared -fPIC -O2 -o target/slow-fsync.so scripts/slow-fsync.c -ldl
 *   LD_PRELOAD=$PWD/target/slow-fsync.so redis-server ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void lag(void) {
    const char *ms = getenv("SLOW_FSYNC_MS");
    long wait = ms ? atol(ms) : 1500;
    struct timespec t = {wait / 1000, (wait % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    lag();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    lag();
    return real(fd);
}
