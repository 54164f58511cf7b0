// write+fdatasync before and after `mount -o remount,abort`, on an overwrite (preallocated) file
// and on an appending file. Usage: probe <mnt>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <errno.h>
static void step(const char *what, int fd, off_t off) {
    char buf[4096]; memset(buf, 'x', sizeof buf);
    ssize_t w = pwrite(fd, buf, sizeof buf, off);
    int we = errno;
    int r = fdatasync(fd);
    int re = errno;
    printf("%-28s pwrite=%zd (%s) fdatasync=%d (%s)\n", what, w, w < 0 ? strerror(we) : "ok", r, r < 0 ? strerror(re) : "ok");
}
int main(int argc, char **argv) {
    char p1[512], p2[512], cmd[600];
    snprintf(p1, sizeof p1, "%s/over", argv[1]);
    snprintf(p2, sizeof p2, "%s/append", argv[1]);
    int a = open(p1, O_RDWR | O_CREAT | O_TRUNC, 0644), b = open(p2, O_RDWR | O_CREAT | O_TRUNC, 0644);
    char z[1 << 16]; memset(z, 0, sizeof z);
    for (int i = 0; i < 16; i++) write(a, z, sizeof z);
    fsync(a); 
    step("overwrite before abort", a, 0);
    step("append before abort", b, 0);
    // dirty pages, then abort, then fdatasync
    char buf[4096]; memset(buf, 'y', sizeof buf);
    pwrite(a, buf, sizeof buf, 8192); pwrite(b, buf, sizeof buf, 4096);
    snprintf(cmd, sizeof cmd, "mount -o remount,abort %s", argv[1]);
    printf("system(%s) = %d\n", cmd, system(cmd));
    int r = fdatasync(a); printf("%-28s fdatasync=%d (%s)\n", "overwrite dirtied before", r, r<0?strerror(errno):"ok");
    r = fdatasync(b); printf("%-28s fdatasync=%d (%s)\n", "append dirtied before", r, r<0?strerror(errno):"ok");
    step("overwrite after abort", a, 16384);
    step("append after abort", b, 8192);
    r = fdatasync(a); printf("%-28s fdatasync=%d (%s)\n", "overwrite, fdatasync again", r, r<0?strerror(errno):"ok");
    return 0;
}
