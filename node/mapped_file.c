#include "mapped_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

ifn_status mapped_file_open(const char *path, mapped_file *mf)
{
    memset(mf, 0, sizeof *mf);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ifn_error_set(IFN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return ifn_error_set(IFN_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ifn_error_set(IFN_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return ifn_error_set(IFN_ERR_IO, "%s: cannot map: %s", path, strerror(e));
        }
        mf->data = p;
        mf->size = (size_t)st.st_size;
    }
    close(fd);
    return IFN_OK;
}

void mapped_file_release_pages(const mapped_file *mf)
{
    if (mf->data) madvise((void *)mf->data, mf->size, MADV_DONTNEED);
}

void mapped_file_release_range(const mapped_file *mf, const void *data, size_t nbytes)
{
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), map = (uintptr_t)mf->data;
    const uintptr_t first = (uintptr_t)data & ~(page - 1), end = ((uintptr_t)data + nbytes + page - 1) & ~(page - 1);
    /* MADV_DONTNEED zeroes anonymous memory: never let a range outside the map through */
    if (!mf->data || nbytes == 0 || first < map || end > ((map + mf->size + page - 1) & ~(page - 1))) return;
    madvise((void *)first, end - first, MADV_DONTNEED);
}

/* The "<key>: N kB" line of a /proc file, in bytes; 0 if absent. */
static size_t proc_kib_field(const char *path, const char *line_format)
{
    FILE *fp = fopen(path, "r");
    if (!fp) return 0;
    char line[256];
    size_t kib = 0;
    while (fgets(line, sizeof line, fp))
        if (sscanf(line, line_format, &kib) == 1) break;
    fclose(fp);
    return kib * 1024;
}

size_t process_rss_bytes(void) { return proc_kib_field("/proc/self/status", "VmRSS: %zu kB"); }

/* One number from a file (a cgroup's memory.max or memory.current); false for "max" or none. */
static bool read_size(const char *path, size_t *out)
{
    FILE *fp = fopen(path, "r");
    if (!fp) return false;
    unsigned long long v;
    bool ok = fscanf(fp, "%llu", &v) == 1;
    fclose(fp);
    if (ok) *out = (size_t)v;
    return ok;
}

size_t memory_available_bytes(void)
{
    size_t avail = proc_kib_field("/proc/meminfo", "MemAvailable: %zu kB"), limit, used;
    if (read_size("/sys/fs/cgroup/memory.max", &limit) && read_size("/sys/fs/cgroup/memory.current", &used)) {
        size_t left = limit > used ? limit - used : 0;
        if (left < avail) avail = left;
    }
    return avail;
}

void mapped_file_close(mapped_file *mf)
{
    if (mf->data) munmap((void *)mf->data, mf->size);
    memset(mf, 0, sizeof *mf);
}
