// Two writers, each: write block i (tagged "REC <i>") then fdatasync, record the last i whose
// fdatasync returned 0. One appends (file grows), one overwrites a preallocated file. The main
// thread aborts the file system after a delay. Usage: race <mnt> <delay_ms>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <errno.h>
#include <time.h>
#define SLOTS 4096
struct w { int fd; const char *name; long acked; int err; long failed_at; };
static void *run(void *p) {
    struct w *w = p; char buf[4096];
    w->acked = -1; w->failed_at = -1;
    for (long i = 0; i < SLOTS; i++) {
        memset(buf, '.', sizeof buf);
        snprintf(buf, sizeof buf, "REC %s %08ld\n", w->name, i);
        if (pwrite(w->fd, buf, sizeof buf, i * 4096) != sizeof buf) { w->err = errno; w->failed_at = i; return 0; }
        if (fdatasync(w->fd) != 0) { w->err = errno; w->failed_at = i; return 0; }
        w->acked = i;
    }
    return 0;
}
int main(int argc, char **argv) {
    char p[512], cmd[600];
    snprintf(p, sizeof p, "%s/over", argv[1]);
    int a = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
    static char z[1 << 20];
    for (int i = 0; i < SLOTS / 256; i++) write(a, z, sizeof z);
    fsync(a);
    snprintf(p, sizeof p, "%s/append", argv[1]);
    int b = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
    int dfd = open(argv[1], O_RDONLY); fsync(dfd);
    struct w wa = { a, "over" }, wb = { b, "append" };
    pthread_t ta, tb;
    pthread_create(&ta, 0, run, &wa); pthread_create(&tb, 0, run, &wb);
    usleep(atoi(argv[2]) * 1000);
    snprintf(cmd, sizeof cmd, "mount -o remount,abort %s", argv[1]);
    int rc = system(cmd);
    pthread_join(ta, 0); pthread_join(tb, 0);
    printf("abort rc=%d\n", rc);
    printf("over   acked_last=%ld failed_at=%ld err=%s\n", wa.acked, wa.failed_at, strerror(wa.err));
    printf("append acked_last=%ld failed_at=%ld err=%s\n", wb.acked, wb.failed_at, strerror(wb.err));
    return 0;
}
