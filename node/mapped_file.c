#include "mapped_file.h"

#include <errno.h>
#include <fcntl.h>
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

size_t process_rss_bytes(void)
{
    FILE *fp = fopen("/proc/self/status", "r");
    if (!fp) return 0;
    char line[256];
    size_t kib = 0;
    while (fgets(line, sizeof line, fp))
        if (sscanf(line, "VmRSS: %zu kB", &kib) == 1) break;
    fclose(fp);
    return kib * 1024;
}

void mapped_file_close(mapped_file *mf)
{
    if (mf->data) munmap((void *)mf->data, mf->size);
    memset(mf, 0, sizeof *mf);
}
