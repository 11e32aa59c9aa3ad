/* A read-only memory map of a whole file. Weights are read through it, so only the pages a
 * rank touches become resident. */
#ifndef IFN_MAPPED_FILE_H
#define IFN_MAPPED_FILE_H

#include <stddef.h>

#include "status.h"

typedef struct {
    const unsigned char *data; /* [size] bytes, NULL for an empty file */
    size_t size;
} mapped_file;

/* Maps path. On failure *mf is zeroed and the error names the path. */
ifn_status mapped_file_open(const char *path, mapped_file *mf);
void mapped_file_close(mapped_file *mf);

/* Drops the pages read so far from this process's resident set (they stay in the page
 * cache; touching them again reads them back). For after weights were packed into memory
 * of our own. */
void mapped_file_release_pages(const mapped_file *mf);

/* Likewise for the pages that hold bytes [data, data + nbytes) of the map (data inside it):
 * for after one tensor was read into memory of our own. Whole pages go, so a neighbour's bytes
 * on the first or last page are dropped too; they are read back if touched. */
void mapped_file_release_range(const mapped_file *mf, const void *data, size_t nbytes);

/* This process's resident set size in bytes (VmRSS), 0 if unknown. */
size_t process_rss_bytes(void);

/* Memory this process may still take without swapping or being killed: the system's
 * MemAvailable, lowered to what its cgroup (v2) limit leaves; 0 if unknown. */
size_t memory_available_bytes(void);

#endif
